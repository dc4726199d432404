"""Compare the tutorial's plain pipeline with fastrec, stage by stage, on one dataset.

    python -m bench.compare --data-dir data/ml-1m [--config configs/tutorial.yaml]
                            [--train-steps N] [--warmup-steps N] [--eval-rows N]
                            [--row-call-rows N] [--compile auto|true|false]
                            [--amp true|false]
                            [--threads N] [--json FILE]

Stages, each run by both pipelines on the same files and config, on the CPU:

- data_preparation: the tutorial's pandas Python-engine parse of the three files
  and per-user unfolding, against fastrec's parser and window-store build, in
  seconds. fastrec's time is the median of three builds;
- training: ``--train-steps`` steps after ``--warmup-steps`` untimed ones, batch
  loading included, in samples/s. The tutorial's per-sample DataLoader and eager
  fp32 step of its plain model (``TutorialModel``) with a full-softmax
  cross-entropy and Adam run against BatchLoader and ``Trainer.train_step``
  (bf16 autocast unless ``--amp false``, compiled unless ``--compile false``);
- evaluation: the same untrained, seeded weights rank the full catalog; the
  tutorial's way ranks its held-out windows in DataLoader batches and blocks each
  row's seen items in a Python loop over the rows, fastrec's ``Evaluator``
  (compiled like the step) ranks its validation rows (rows/s);
- evaluation_row_calls: the tutorial's loop with one model call per row, on
  ``--row-call-rows`` rows, for reference (no target).

The data_preparation ratio is the tutorial's seconds over fastrec's, the others
fastrec's throughput over the tutorial's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.tutorial_way import (
    EvalDataset,
    TutorialDataset,
    TutorialModel,
    TutorialSamples,
    evaluate_tutorial,
    make_loader,
    prepare_tutorial,
    tutorial_step_function,
)
from fastrec.config import Config, load_config
from fastrec.data.prepare import PreparedData, prepare
from fastrec.distributed import DistInfo
from fastrec.errors import ConfigError, DataError, exit_on_user_error
from fastrec.evaluate import Evaluator, write_metrics
from fastrec.train import Trainer, build_model

log = logging.getLogger("bench.compare")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tutorial.yaml"
# Speedup targets of fastrec over the tutorial's pipeline on a 2-core CPU machine.
TARGETS = {"data_preparation": 10.0, "training": 5.0, "evaluation": 20.0}
STORE_BUILDS = 3
# Alternating chunks of the timed training steps.
TRAIN_CHUNKS = 10


def load_compare_config(
    config_path: str | None, data_dir: str, compile_mode: str, amp: str = "true"
) -> Config:
    """Load the run config on ``data_dir`` for the CPU and check it is the tutorial's.

    The tutorial's pipeline only unfolds full windows with stride 1 over the
    ``windows`` split, so other splits raise ConfigError.
    """
    config = load_config(
        config_path or DEFAULT_CONFIG,
        [
            "data.download=false",
            "train.device=cpu",
            f"train.amp={amp}",
            f"train.compile={compile_mode}",
        ],
    )
    config.data = dataclasses.replace(config.data, data_dir=data_dir)
    data = config.data
    if data.split != "windows" or data.stride != 1 or data.min_history != data.max_len:
        raise ConfigError(
            f"{config_path or DEFAULT_CONFIG} has data.split={data.split}, "
            f"stride={data.stride}, min_history={data.min_history}, but the tutorial's "
            "pipeline needs split=windows, stride=1 and min_history=max_len; use "
            "configs/tutorial.yaml"
        )
    if config.model.head != "interaction":
        raise ConfigError(
            f"{config_path or DEFAULT_CONFIG} has model.head={config.model.head}, "
            "but the tutorial's step needs the interaction head's [B, V] logits; use "
            "configs/tutorial.yaml"
        )
    if not (Path(data_dir) / "ratings.dat").is_file():
        raise DataError(
            f"{data_dir} has no ratings.dat; pass --data-dir with an ml-1m folder "
            "(python -m fastrec.data.download fetches one)"
        )
    return config


def compare_preparation(
    config: Config, store_dir: Path
) -> tuple[dict[str, Any], PreparedData, TutorialSamples, TutorialSamples]:
    """Time both data preparations; return their report and their outputs."""
    data = config.data
    log.info("tutorial: parsing with pandas and unfolding windows per user")
    started = time.perf_counter()
    tutorial, train, holdout = prepare_tutorial(
        data.data_dir, data.holdout_fraction, data.seed
    )
    tutorial_seconds = time.perf_counter() - started

    store = store_dir / "windows.arrow"
    seconds = []
    for _ in range(STORE_BUILDS):
        store.unlink(missing_ok=True)
        started = time.perf_counter()
        prepared = prepare(data, store=store)
        seconds.append(time.perf_counter() - started)
    fastrec_seconds = statistics.median(seconds)
    log.info("fastrec: store built in %s s", ", ".join(f"{s:.2f}" for s in seconds))

    report = {
        "unit": "s",
        "tutorial": tutorial_seconds,
        "fastrec": fastrec_seconds,
        "fastrec_runs": seconds,
        "ratio": tutorial_seconds / fastrec_seconds,
        "tutorial_samples": len(tutorial.samples),
        "fastrec_rows": len(prepared.store),
    }
    return report, prepared, train, holdout


@dataclass
class TrainTiming:
    """Accumulated steps, samples and seconds of one pipeline's timed chunks."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    loss_sum: float = 0.0

    @property
    def samples_per_s(self) -> float:
        """Timed samples per second."""
        return self.samples / max(self.seconds, 1e-9)


def endless(start_epoch: Callable[[], Iterator[dict[str, torch.Tensor]]]):
    """Yield batches epoch after epoch, calling ``start_epoch()`` for each epoch."""
    while True:
        yield from start_epoch()


def run_chunk(
    batches: Iterator[dict[str, torch.Tensor]],
    step: Callable[[dict[str, torch.Tensor]], float | torch.Tensor],
    steps: int,
    timing: TrainTiming,
) -> None:
    """Run and time ``steps`` steps, batch loading included, adding to ``timing``."""
    loss_sum: float | torch.Tensor = 0.0
    samples = 0
    started = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        loss_sum = loss_sum + step(batch)
        samples += int(batch["user"].shape[0])
    # Reading the loss waits for any queued device work.
    loss = float(loss_sum)
    timing.seconds += time.perf_counter() - started
    timing.steps += steps
    timing.samples += samples
    timing.loss_sum += loss


def compare_training(
    config: Config,
    prepared: PreparedData,
    train: TutorialSamples,
    out_dir: Path,
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    """Time ``steps`` training steps of each pipeline after ``warmup`` ones.

    The timed steps alternate between the pipelines in TRAIN_CHUNKS chunks, so a
    change in the load of a shared machine affects both about equally.
    """
    batch_size = config.train.batch_size
    model = tutorial_model(config, prepared)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.train.lr, betas=config.train.betas
    )
    loader = make_loader(TutorialDataset(train), batch_size, seed=config.train.seed)
    tutorial_batches = endless(lambda: iter(loader))
    tutorial_step = tutorial_step_function(model, optimizer)

    trainer = Trainer(config, prepared, out_dir, DistInfo())
    fastrec_batches = endless(trainer.loader.iterate)

    def fastrec_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return trainer.train_step(batch)[0]

    log.info(
        "training: %d warm-up and %d timed steps of %d per pipeline; fastrec with "
        "amp %s, compile %s",
        warmup,
        steps,
        batch_size,
        trainer.amp_dtype,
        trainer.compiled,
    )
    warmups = {"tutorial": TrainTiming(), "fastrec": TrainTiming()}
    run_chunk(tutorial_batches, tutorial_step, warmup, warmups["tutorial"])
    run_chunk(fastrec_batches, fastrec_step, warmup, warmups["fastrec"])

    tutorial, fastrec = TrainTiming(), TrainTiming()
    chunks = min(TRAIN_CHUNKS, steps)
    for chunk in range(chunks):
        chunk_steps = steps // chunks + (1 if chunk < steps % chunks else 0)
        run_chunk(tutorial_batches, tutorial_step, chunk_steps, tutorial)
        run_chunk(fastrec_batches, fastrec_step, chunk_steps, fastrec)
    fastrec_batches.close()
    return {
        "unit": "samples/s",
        "tutorial": tutorial.samples_per_s,
        "fastrec": fastrec.samples_per_s,
        "ratio": fastrec.samples_per_s / tutorial.samples_per_s,
        "batch_size": batch_size,
        "steps": steps,
        "warmup_steps": warmup,
        "tutorial_seconds": tutorial.seconds,
        "fastrec_seconds": fastrec.seconds,
        "tutorial_warmup_seconds": warmups["tutorial"].seconds,
        "fastrec_warmup_seconds": warmups["fastrec"].seconds,
        "tutorial_mean_loss": tutorial.loss_sum / tutorial.steps,
        "fastrec_mean_loss": fastrec.loss_sum / fastrec.steps,
        "fastrec_amp": str(trainer.amp_dtype),
        "fastrec_compiled": trainer.compiled,
    }


def tutorial_model(config: Config, prepared: PreparedData) -> TutorialModel:
    """Return the tutorial's plain model with the seeded weights fastrec starts from."""
    torch.manual_seed(config.train.seed)
    fastrec_model = build_model(config, prepared)
    model = TutorialModel(fastrec_model.config)
    model.load_state_dict(fastrec_model.state_dict())
    return model


def tutorial_eval_inputs(
    holdout: TutorialSamples, rows: int
) -> tuple[EvalDataset, list[torch.Tensor]]:
    """Return the first ``rows`` held-out samples and their seen items.

    The tutorial blocks the items of the input window.
    """
    dataset = EvalDataset(
        holdout.items[:rows].numpy(),
        holdout.user[:rows].numpy(),
        holdout.target[:rows].numpy(),
    )
    return dataset, [holdout.items[row].long() for row in range(rows)]


def compare_evaluation(
    config: Config,
    prepared: PreparedData,
    holdout: TutorialSamples,
    max_rows: int,
    row_call_rows: int,
) -> dict[str, dict[str, Any]]:
    """Time both evaluations of the same seeded, untrained weights.

    Returns the ``evaluation`` stage and, when ``row_call_rows`` > 0, the
    ``evaluation_row_calls`` stage, which runs the tutorial's loop with one model
    call per row on that many rows.
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config, prepared).eval()
    ks = config.eval.ks
    batch_size = config.eval.batch_size
    top = max(ks)

    compiled = config.train.compile == "true"
    evaluator = Evaluator(
        prepared, config.eval, torch.device("cpu"), compile_model=compiled
    )
    log.info(
        "fastrec: ranking %d validation rows twice, timing the second pass",
        len(evaluator.rows("valid")),
    )
    evaluator.evaluate_model(model, "valid")
    started = time.perf_counter()
    result = evaluator.evaluate_model(model, "valid")
    fastrec_rate = result["users"] / (time.perf_counter() - started)

    plain = tutorial_model(config, prepared).eval()
    rows = len(holdout) if max_rows <= 0 else min(max_rows, len(holdout))
    dataset, seen = tutorial_eval_inputs(holdout, rows)
    warmup_rows, warmup_seen = tutorial_eval_inputs(holdout, min(rows, batch_size))
    evaluate_tutorial(plain, warmup_rows, warmup_seen, ks, batch_size)
    log.info("tutorial: ranking %d held-out rows in batches of %d", rows, batch_size)
    tutorial = evaluate_tutorial(plain, dataset, seen, ks, batch_size)
    stages = {
        "evaluation": {
            "unit": "rows/s",
            "tutorial": tutorial.rows_per_s,
            "fastrec": fastrec_rate,
            "ratio": fastrec_rate / tutorial.rows_per_s,
            "tutorial_rows": tutorial.rows,
            "fastrec_rows": result["users"],
            f"tutorial_HR@{top}": tutorial.hit_rate(top),
            f"fastrec_HR@{top}": result.get(f"HR@{top}"),
            "batch_size": batch_size,
            "fastrec_compiled": compiled,
        }
    }
    if row_call_rows > 0:
        rows = min(row_call_rows, len(holdout))
        dataset, seen = tutorial_eval_inputs(holdout, rows)
        log.info("tutorial: ranking %d held-out rows one model call per row", rows)
        per_row = evaluate_tutorial(plain, dataset, seen, ks, batch_size=1)
        stages["evaluation_row_calls"] = {
            "unit": "rows/s",
            "tutorial": per_row.rows_per_s,
            "fastrec": fastrec_rate,
            "ratio": fastrec_rate / per_row.rows_per_s,
            "tutorial_rows": per_row.rows,
            f"tutorial_HR@{top}": per_row.hit_rate(top),
        }
    return stages


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the machine type."""
    try:
        with open("/proc/cpuinfo") as source:
            for line in source:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def environment() -> dict[str, Any]:
    """Return the machine and library facts printed with the results."""
    import pandas
    import pyarrow

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def format_report(stages: dict[str, dict[str, Any]]) -> str:
    """Return the per-stage table: both values, the ratio and the target."""
    lines = [
        f"{'stage':<22}{'unit':>10}{'tutorial':>14}{'fastrec':>14}"
        f"{'ratio':>9}{'target':>9}",
    ]
    for name, stage in stages.items():
        target = f"{TARGETS[name]:.0f}x" if name in TARGETS else "-"
        lines.append(
            f"{name:<22}{stage['unit']:>10}{stage['tutorial']:>14,.2f}"
            f"{stage['fastrec']:>14,.2f}{stage['ratio']:>8.1f}x{target:>9}"
        )
    lines.append(
        "data_preparation ratio = tutorial seconds / fastrec seconds; the others = "
        "fastrec throughput / tutorial throughput"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", default="data/ml-1m", help="ml-1m folder")
    parser.add_argument("--config", help="run config (default: configs/tutorial.yaml)")

    parser.add_argument(
        "--train-steps", type=int, default=100, help="timed training steps (100)"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=5, help="untimed steps first (5)"
    )

    parser.add_argument(
        "--eval-rows",
        type=int,
        default=0,
        help="held-out rows the tutorial's evaluation ranks; 0 = all (default)",
    )
    parser.add_argument(
        "--row-call-rows",
        type=int,
        default=500,
        help="held-out rows of the extra one-model-call-per-row evaluation; 0 skips "
        "it (default 500)",
    )

    parser.add_argument(
        "--compile",
        choices=("auto", "true", "false"),
        default="true",
        help="torch.compile fastrec's step and evaluation (default true; the "
        "compilation runs in the untimed warm-up)",
    )
    parser.add_argument(
        "--amp",
        choices=("true", "false"),
        default="true",
        help="bf16 autocast in fastrec's step (default true, as train.amp; the "
        "Evaluator runs fp32 on the CPU either way)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for both pipelines; 0 keeps torch's default",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    if args.train_steps < 1:
        parser.error(f"--train-steps {args.train_steps} is invalid: use 1 or more")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps {args.warmup_steps} is invalid: use 0 or more")
    if args.threads < 0:
        parser.error(f"--threads {args.threads} is invalid: use 0 or more")
    return args


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ``bench.compare`` command line."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = load_compare_config(args.config, args.data_dir, args.compile, args.amp)
    with tempfile.TemporaryDirectory(prefix="fastrec-compare-") as scratch:
        folder = Path(scratch)
        prep, prepared, train, holdout = compare_preparation(config, folder)
        stages = {"data_preparation": prep}
        stages["training"] = compare_training(
            config, prepared, train, folder, args.train_steps, args.warmup_steps
        )
        stages.update(
            compare_evaluation(
                config, prepared, holdout, args.eval_rows, args.row_call_rows
            )
        )
    results = {
        "data_dir": args.data_dir,
        "config": str(args.config or DEFAULT_CONFIG),
        "environment": environment(),
        "targets": TARGETS,
        "stages": stages,
    }
    print(format_report(stages))
    if args.json:
        write_metrics(args.json, results)
        log.info("wrote %s", args.json)
    return results


if __name__ == "__main__":
    main()
