"""Benchmarks of fastrec's training step on the CPU: eager or compiled, fp32 or bf16.

Each case builds a ``Trainer`` and times ``Trainer.train_step`` (forward, loss,
backward, AdamW and scheduler step) over batches gathered beforehand, so loading
is not part of the time. The first step runs before the timed rounds: under
torch.compile it includes compilation, which extra_info reports as
``compile_seconds``. Throughput is ``per_second`` (samples/s) in extra_info.

Cases: configs/tutorial.yaml's model (interaction head, T=5, batch 512) and the
default config's dot-head model on the leave-one-out split (T=50, batch 128).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from bench.conftest import Record
from fastrec.config import Config
from fastrec.data.prepare import PreparedData
from fastrec.distributed import DistInfo
from fastrec.train import Trainer

# (steps per round, rounds) per model: about 5 s per round under contention.
TIMING = {"tutorial": (5, 5), "dot": (1, 3)}
CASES = [
    pytest.param("tutorial", False, False, id="tutorial-eager-fp32"),
    pytest.param("tutorial", True, False, id="tutorial-eager-bf16"),
    pytest.param("tutorial", True, True, id="tutorial-compiled-bf16"),
    pytest.param("dot", False, False, id="dot-eager-fp32"),
    pytest.param("dot", True, False, id="dot-eager-bf16"),
    pytest.param("dot", True, True, id="dot-compiled-bf16"),
]


def make_trainer(
    base: Config, prepared: PreparedData, out_dir: Path, amp: bool, compiled: bool
) -> Trainer:
    """Build a CPU Trainer of ``base`` with the given precision and compile setting."""
    train = dataclasses.replace(
        base.train, amp=amp, compile="true" if compiled else "false"
    )
    return Trainer(
        dataclasses.replace(base, train=train), prepared, out_dir, DistInfo()
    )


@pytest.mark.parametrize(("model", "amp", "compiled"), CASES)
def test_train_step(
    benchmark,
    throughput: Record,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model: str,
    amp: bool,
    compiled: bool,
):
    """Time training steps of one model, precision and compile setting."""
    if model == "tutorial":
        config = request.getfixturevalue("tutorial_config")
        prepared = request.getfixturevalue("windows_prepared")
    else:
        config = request.getfixturevalue("dot_config")
        prepared = request.getfixturevalue("loo_prepared")
    torch.manual_seed(0)
    trainer = make_trainer(config, prepared, tmp_path, amp, compiled)
    steps, rounds = TIMING[model]
    iterator = iter(trainer.loader)
    batches = [next(iterator) for _ in range(steps)]
    del iterator

    started = time.perf_counter()
    trainer.train_step(batches[0])
    first_step = time.perf_counter() - started

    def run_steps() -> torch.Tensor:
        for batch in batches:
            loss, _ = trainer.train_step(batch)
        return loss

    loss = benchmark.pedantic(run_steps, rounds=rounds, iterations=1, warmup_rounds=1)
    assert torch.isfinite(loss)
    samples = sum(int(batch["user"].shape[0]) for batch in batches)
    per_step = benchmark.stats.stats.mean / steps
    benchmark.extra_info.update(
        batch_size=trainer.loader.batch_size,
        steps_per_round=steps,
        first_step_seconds=first_step,
        compile_seconds=max(0.0, first_step - per_step) if compiled else 0.0,
        tflops=trainer.flops_per_sample * samples / benchmark.stats.stats.mean / 1e12,
    )
    name = f"train_{model}_{'compiled' if compiled else 'eager'}_"
    throughput(name + ("bf16" if amp else "fp32"), samples / benchmark.stats.stats.mean)
