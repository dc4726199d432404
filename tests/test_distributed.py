"""DDP training with two gloo ranks on the CPU: outputs, sharding, exact evaluation.

The ranks are spawned processes that meet through a rendezvous file, so no port is
picked, and on Linux gloo talks over the loopback interface. Every collective times
out after COLLECTIVE_TIMEOUT_S and the whole job after JOB_TIMEOUT_S, so a hang
fails the test instead of blocking the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastrec import train as train_module
from fastrec.checkpoint import load_checkpoint
from fastrec.config import load_config
from fastrec.data.prepare import prepare
from fastrec.data.synthetic import write_synthetic_movielens
from fastrec.distributed import DistInfo
from fastrec.evaluate import Evaluator
from fastrec.model import ModelConfig, SequentialRecommender

pytestmark = pytest.mark.skipif(
    not dist.is_available(), reason="torch.distributed unavailable"
)

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
WORLD_SIZE = 2
# An odd number of users gives 65 validation and 65 test rows, which two ranks
# split 33/32. With 16 rows per evaluation batch, rank 0 runs 3 batches and rank 1
# runs 2, so the shards differ in rows and in batches.
N_USERS = 65
EVAL_BATCH_SIZE = 16
BATCH_SIZE = 16
EPOCHS = 2
SETTINGS = (
    *("--set", f"eval.batch_size={EVAL_BATCH_SIZE}"),
    *("--set", f"train.batch_size={BATCH_SIZE}"),
    *("--set", f"train.epochs={EPOCHS}"),
)
# Rank 1 alone gets SIGTERM during this step of the first epoch.
SIGNAL_STEP = 3
COLLECTIVE_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class Run:
    """One ``fastrec.train`` command line for every rank.

    With ``signal_rank`` set, that rank alone acts as if SIGTERM arrived during
    global step ``signal_step`` (1-based), as when one machine is preempted.
    """

    argv: list[str]
    signal_rank: int | None = None
    signal_step: int = 0


def _signal_during_step(step: int) -> None:
    original = train_module.Trainer.train_step

    def train_step(self, batch):
        result = original(self, batch)
        if self.global_step + 1 == step:
            self._stop_signal = signal.SIGTERM
        return result

    train_module.Trainer.train_step = train_step


def _rank_worker(rank: int, init_file: str, runs: list[Run], work_dir: str) -> None:
    """Run every ``Run`` as rank ``rank`` of a gloo group.

    The exit status of each run (0 when main returns) goes to
    ``work_dir/rank<rank>.json``. Rank 0 copies ``last.pt`` after run i to
    ``work_dir/last-<i>.pt``, so tests can see checkpoints that later runs replace.
    """
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    original_step = train_module.Trainer.train_step
    codes = []
    try:
        for index, run in enumerate(runs):
            train_module.Trainer.train_step = original_step
            if run.signal_rank == rank:
                _signal_during_step(run.signal_step)
            try:
                train_module.main(run.argv)
                codes.append(0)
            except SystemExit as stop:
                codes.append(stop.code)
            last = Path(run.argv[run.argv.index("--out-dir") + 1]) / "last.pt"
            if rank == 0 and last.exists():
                shutil.copyfile(last, Path(work_dir, f"last-{index}.pt"))
    finally:
        dist.destroy_process_group()
    Path(work_dir, f"rank{rank}.json").write_text(json.dumps(codes))


def run_ranks(runs: list[Run], work_dir: Path) -> list[list[int]]:
    """Run ``runs`` on two spawned ranks; return each rank's exit statuses."""
    work_dir.mkdir(parents=True, exist_ok=True)
    init_file = work_dir / "rendezvous"
    init_file.unlink(missing_ok=True)
    context = mp.start_processes(
        _rank_worker,
        args=(str(init_file), runs, str(work_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    # join() raises when a rank fails and stops the other ranks itself.
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"the {WORLD_SIZE} ranks did not finish in {JOB_TIMEOUT_S} s")
    return [
        json.loads((work_dir / f"rank{rank}.json").read_text())
        for rank in range(WORLD_SIZE)
    ]


@pytest.fixture(scope="module", autouse=True)
def loopback_gloo():
    """Keep gloo on the loopback interface, which the spawned ranks inherit."""
    if not sys.platform.startswith("linux"):
        yield
        return
    previous = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    yield
    if previous is None:
        del os.environ["GLOO_SOCKET_IFNAME"]
    else:
        os.environ["GLOO_SOCKET_IFNAME"] = previous


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("ddp-data") / "ml-1m"
    write_synthetic_movielens(
        folder, n_users=N_USERS, n_movies=100, min_ratings=20, mean_ratings=40, seed=5
    )
    return str(folder)


def train_args(data_dir: str, out_dir: Path, *extra: str) -> list[str]:
    args = ["--config", TINY, "--data-dir", data_dir, "--out-dir", str(out_dir)]
    return [*args, *SETTINGS, *extra]


@dataclasses.dataclass(frozen=True)
class DdpRuns:
    """Output folders of the module's two-rank runs."""

    work: Path
    straight: Path
    resumed: Path


@pytest.fixture(scope="module")
def ddp_runs(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> DdpRuns:
    """Train 2 epochs on two ranks, straight and with a stop and --resume.

    The stop comes from a signal that only rank 1 gets, during step SIGNAL_STEP.
    """
    work = tmp_path_factory.mktemp("ddp-runs")
    straight, resumed = work / "straight", work / "resumed"
    runs = [
        Run(train_args(data_dir, straight)),
        Run(train_args(data_dir, resumed), signal_rank=1, signal_step=SIGNAL_STEP),
        Run(train_args(data_dir, resumed, "--resume")),
    ]
    codes = run_ranks(runs, work)
    stopped = 128 + signal.SIGTERM
    assert codes == [[0, stopped, 0], [0, stopped, 0]]
    return DdpRuns(work, straight, resumed)


@pytest.fixture(scope="module")
def evaluator(data_dir: str) -> Evaluator:
    """Return the evaluator that a one-process run of the same config builds."""
    config = load_config(TINY, [f"eval.batch_size={EVAL_BATCH_SIZE}"])
    config.data = dataclasses.replace(config.data, data_dir=data_dir)
    device = torch.device("cpu")
    return Evaluator(
        prepare(config.data),
        config.eval,
        device,
        train_module.amp_dtype(config, device),
        DistInfo(),
    )


def model_without_prefix_stripping(state: dict) -> SequentialRecommender:
    weights = state["model"]
    model = SequentialRecommender(
        ModelConfig(**state["model_config"]),
        item_genres=weights.get("item_genres"),
        user_codes=weights.get("user_codes"),
    )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def assert_same_metrics(expected: dict, actual: dict, where: str) -> None:
    assert expected.keys() == actual.keys(), where
    for name, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(actual[name]), f"{where} {name}"
        else:
            assert actual[name] == value, f"{where} {name}"


def test_ddp_run_writes_outputs_once(ddp_runs: DdpRuns):
    for name in ("last.pt", "best.pt", "metrics.json", "config.json"):
        assert (ddp_runs.straight / name).is_file(), name
    rows = [json.loads(line) for line in (ddp_runs.straight / "metrics.jsonl").open()]
    # Two ranks that both wrote would leave four rows.
    assert [row["epoch"] for row in rows] == [1, 2]
    assert len(list((ddp_runs.straight / "tensorboard").iterdir())) == 1


def steps_per_epoch(evaluator: Evaluator) -> int:
    windows = len(evaluator.prepared.store.part("train"))
    return windows // WORLD_SIZE // BATCH_SIZE


def test_ddp_steps_shard_training_windows(ddp_runs: DdpRuns, evaluator: Evaluator):
    state = load_checkpoint(ddp_runs.straight / "last.pt")
    assert state["world_size"] == WORLD_SIZE
    assert state["epoch"] == EPOCHS
    assert state["global_step"] == EPOCHS * steps_per_epoch(evaluator)


def test_ddp_ranks_have_own_dropout_rng(ddp_runs: DdpRuns):
    state = load_checkpoint(ddp_runs.straight / "last.pt")
    first, second = state["rng_ranks"]
    assert torch.equal(first["torch"], state["rng"]["torch"])
    assert not torch.equal(first["torch"], second["torch"])


def test_ddp_checkpoint_loads_strictly_alone(ddp_runs: DdpRuns):
    state = load_checkpoint(ddp_runs.straight / "best.pt")
    prefixes = ("module.", "_orig_mod.")
    assert not [key for key in state["model"] if key.startswith(prefixes)]
    model = model_without_prefix_stripping(state)
    assert model.num_parameters() > 0


def test_ddp_test_metrics_equal_single_process(ddp_runs: DdpRuns, evaluator: Evaluator):
    reported = json.loads((ddp_runs.straight / "metrics.json").read_text())
    best = load_checkpoint(ddp_runs.straight / "best.pt")
    alone = evaluator.evaluate_all(model_without_prefix_stripping(best), "test")
    assert N_USERS % WORLD_SIZE == 1
    assert alone["users"] == N_USERS
    assert reported["users"] == N_USERS
    assert reported["model"]["users"] == N_USERS
    for name in ("model", *evaluator.config.baselines):
        assert_same_metrics(alone[name], reported[name], name)


def test_ddp_valid_metrics_equal_single_process(
    ddp_runs: DdpRuns, evaluator: Evaluator
):
    rows = [json.loads(line) for line in (ddp_runs.straight / "metrics.jsonl").open()]
    # last.pt contains the weights after the last epoch, which its row validated.
    last = load_checkpoint(ddp_runs.straight / "last.pt")
    alone = evaluator.evaluate_model(
        model_without_prefix_stripping(last), "valid", ks=[10]
    )
    assert alone["users"] == N_USERS
    assert_same_metrics(alone, rows[-1]["valid"], "valid")


def test_ddp_signal_on_one_rank_stops_all(ddp_runs: DdpRuns, evaluator: Evaluator):
    assert SIGNAL_STEP + 1 < steps_per_epoch(evaluator)
    state = load_checkpoint(ddp_runs.work / "last-1.pt")
    # The ranks agree on the stop one step after the signal.
    assert state["epoch"] == 0
    assert state["step_in_epoch"] == SIGNAL_STEP + 1
    assert state["global_step"] == SIGNAL_STEP + 1


def test_ddp_resume_equals_straight_run(ddp_runs: DdpRuns):
    straight = load_checkpoint(ddp_runs.straight / "last.pt")
    resumed = load_checkpoint(ddp_runs.resumed / "last.pt")
    assert resumed["global_step"] == straight["global_step"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    a = json.loads((ddp_runs.straight / "metrics.json").read_text())
    b = json.loads((ddp_runs.resumed / "metrics.json").read_text())
    assert_same_metrics(a["model"], b["model"], "model")


def test_ddp_missing_data_stops_every_rank(tmp_path: Path, capfd):
    missing = tmp_path / "no-such-folder"
    args = train_args(str(missing), tmp_path / "run", "--set", "data.download=false")
    codes = run_ranks([Run(args)], tmp_path / "work")
    assert codes == [[2], [2]]
    err = capfd.readouterr().err
    assert err.count("error: ") == 1, err
    assert str(missing) in err
