"""Benchmarks of the training step: eager or compiled, fp32 or bf16 autocast.

Each fastrec case builds a ``Trainer`` and times ``Trainer.train_step`` (forward,
loss, backward, AdamW and scheduler step) over batches gathered beforehand, so
loading is not part of the time. The first step runs before the timed rounds:
under torch.compile it includes compilation, which extra_info reports as
``compile_seconds``. Throughput is ``per_second`` (samples/s) in extra_info.

The tutorial-way case times the tutorial's eager fp32 step of its plain model
(``TutorialModel``: full-softmax cross-entropy on the [B, V] logits, Adam,
``loss.item()`` every step) on batches of its per-sample DataLoader, also gathered
beforehand.

Cases: configs/tutorial.yaml's model (interaction head, T=5, batch 512) in all four
combinations, and the default config's dot-head model on the leave-one-out split
(T=50, the default batch size) without compiled fp32, which saves a CPU
compilation. The CUDA cases skip without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch

from bench.conftest import Record
from bench.tutorial_way import (
    StoreWindowDataset,
    TutorialModel,
    make_loader,
    tutorial_step_function,
)
from fastrec.config import Config
from fastrec.data.prepare import PreparedData
from fastrec.distributed import DistInfo
from fastrec.train import Trainer, build_model

# (steps per round, rounds) per (model, device): about 5 s per CPU round.
TIMING = {
    ("tutorial", "cpu"): (5, 5),
    ("dot", "cpu"): (1, 3),
    ("tutorial", "cuda"): (50, 5),
    ("dot", "cuda"): (50, 5),
}
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)
CASES = [
    pytest.param("tutorial", False, False, "cpu", id="tutorial-eager-fp32"),
    pytest.param("tutorial", True, False, "cpu", id="tutorial-eager-bf16"),
    pytest.param("tutorial", False, True, "cpu", id="tutorial-compiled-fp32"),
    pytest.param("tutorial", True, True, "cpu", id="tutorial-compiled-bf16"),
    pytest.param("dot", False, False, "cpu", id="dot-eager-fp32"),
    pytest.param("dot", True, False, "cpu", id="dot-eager-bf16"),
    pytest.param("dot", True, True, "cpu", id="dot-compiled-bf16"),
    pytest.param(
        "tutorial",
        True,
        True,
        "cuda",
        id="tutorial-compiled-bf16-cuda",
        marks=needs_cuda,
    ),
    pytest.param(
        "dot", True, True, "cuda", id="dot-compiled-bf16-cuda", marks=needs_cuda
    ),
]


def case_data(
    request: pytest.FixtureRequest, model: str
) -> tuple[Config, PreparedData]:
    """Return the config and prepared data of a model's case."""
    if model == "tutorial":
        return (
            request.getfixturevalue("tutorial_config"),
            request.getfixturevalue("windows_prepared"),
        )
    return request.getfixturevalue("dot_config"), request.getfixturevalue(
        "loo_prepared"
    )


def make_trainer(
    base: Config,
    prepared: PreparedData,
    out_dir: Path,
    amp: bool,
    compiled: bool,
    device: str = "cpu",
) -> Trainer:
    """Build a Trainer of ``base`` with a precision, compile setting and device."""
    train = dataclasses.replace(
        base.train, amp=amp, compile="true" if compiled else "false", device=device
    )
    return Trainer(
        dataclasses.replace(base, train=train), prepared, out_dir, DistInfo()
    )


@pytest.mark.parametrize(("model", "amp", "compiled", "device"), CASES)
def test_train_step(
    benchmark,
    throughput: Record,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model: str,
    amp: bool,
    compiled: bool,
    device: str,
):
    """Time training steps of one model, precision, compile setting and device."""
    config, prepared = case_data(request, model)
    torch.manual_seed(0)
    trainer = make_trainer(config, prepared, tmp_path, amp, compiled, device)
    cuda = trainer.device.type == "cuda"
    steps, rounds = TIMING[(model, device)]
    iterator = iter(trainer.loader)
    batches = [next(iterator) for _ in range(steps)]
    del iterator

    def run_steps() -> torch.Tensor:
        for batch in batches:
            loss, _ = trainer.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
        return loss

    started = time.perf_counter()
    trainer.train_step(batches[0])
    if cuda:
        torch.cuda.synchronize()
    first_step = time.perf_counter() - started

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
    name += "bf16" if amp else "fp32"
    if cuda:
        name += "_cuda"
    throughput(name, samples / benchmark.stats.stats.mean)


def test_tutorial_step(
    benchmark,
    throughput: Record,
    tutorial_config: Config,
    windows_prepared: PreparedData,
):
    """Time the tutorial's eager fp32 step with its full-softmax cross-entropy."""
    steps, rounds = TIMING[("tutorial", "cpu")]
    torch.manual_seed(0)
    model = TutorialModel(build_model(tutorial_config, windows_prepared).config)
    train = tutorial_config.train
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=train.betas)
    step = tutorial_step_function(model, optimizer)
    loader = make_loader(
        StoreWindowDataset(windows_prepared.store.part("train")), train.batch_size
    )
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(steps)]
    del iterator
    step(batches[0])

    def run_steps() -> float:
        for batch in batches:
            loss = step(batch)
        return loss

    loss = benchmark.pedantic(run_steps, rounds=rounds, iterations=1, warmup_rounds=1)
    assert math.isfinite(loss)
    samples = sum(int(batch["user"].shape[0]) for batch in batches)
    benchmark.extra_info.update(batch_size=train.batch_size, steps_per_round=steps)
    throughput("train_tutorial_way", samples / benchmark.stats.stats.mean)
