"""The training job end to end on small synthetic data: outputs, resume, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastrec import train as train_module
from fastrec.data.synthetic import write_synthetic_movielens

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("train-data") / "ml-1m"
    write_synthetic_movielens(folder, n_users=80, n_movies=120, seed=7)
    return str(folder)


def run_train(data_dir: str, out_dir: Path, *extra: str) -> dict:
    args = ["--config", TINY, "--data-dir", data_dir, "--out-dir", str(out_dir)]
    return train_module.main([*args, *extra])


def test_run_writes_outputs(data_dir: str, tmp_path: Path):
    out = tmp_path / "run"
    results = run_train(data_dir, out)
    for name in (
        "last.pt",
        "best.pt",
        "metrics.json",
        "metrics.jsonl",
        "loss_curve.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["users"] == 80
    assert "HR@10" in metrics["model"]
    assert "NDCG@50" in metrics["most_popular"]
    assert results["model"]["users"] == 80
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    assert "samples_per_s" in json.loads(rows[0])
    assert list((out / "tensorboard").iterdir())


def test_checkpoint_loads_weights_only(data_dir: str, tmp_path: Path):
    out = tmp_path / "run"
    run_train(data_dir, out, "--set", "train.epochs=1")
    state = torch.load(out / "last.pt", weights_only=True)
    prefixes = ("_orig_mod.", "module.")
    assert not [k for k in state["model"] if k.startswith(prefixes)]
    for key in ("optimizer", "scheduler", "scaler", "rng", "store", "model_config"):
        assert key in state, key
    assert state["store"]["key"]


def final_parameters(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def stop_at_step(monkeypatch: pytest.MonkeyPatch, global_step: int) -> None:
    """Make the trainer act as if SIGTERM arrived after ``global_step`` steps."""
    original = train_module.Trainer.train_step

    def step(self, batch):
        result = original(self, batch)
        if self.global_step + 1 == global_step:
            self._stop_signal = signal.SIGTERM
        return result

    monkeypatch.setattr(train_module.Trainer, "train_step", step)


def test_resume_mid_epoch_equals_uninterrupted(
    data_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = ["--set", "train.epochs=3", "--set", "train.amp=false"]
    straight = tmp_path / "straight"
    run_train(data_dir, straight, *settings)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        stop_at_step(patch, 7)
        with pytest.raises(SystemExit) as stopped:
            run_train(data_dir, resumed, *settings)
    assert stopped.value.code == 128 + signal.SIGTERM
    state = torch.load(resumed / "last.pt", weights_only=True)
    assert state["step_in_epoch"] > 0
    run_train(data_dir, resumed, *settings, "--resume")

    expected = final_parameters(straight)
    actual = final_parameters(resumed)
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    a = json.loads((straight / "metrics.json").read_text())["model"]
    b = json.loads((resumed / "metrics.json").read_text())["model"]
    assert a == b


def test_nan_loss_stops_and_keeps_checkpoint(
    data_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    out = tmp_path / "run"
    original = train_module.linear_cross_entropy
    calls = {"n": 0}

    def loss(features, weight, targets, weights=None):
        calls["n"] += 1
        value = original(features, weight, targets, weights)
        # Steps of the second epoch turn NaN.
        return value * float("nan") if calls["n"] > 8 else value

    monkeypatch.setattr(train_module, "linear_cross_entropy", loss)
    with pytest.raises(SystemExit) as stopped:
        run_train(data_dir, out, "--set", "train.epochs=3")
    assert stopped.value.code == 2
    assert "loss became nan" in capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


def test_unknown_config_key_exits_2(data_dir: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_train(data_dir, tmp_path / "run", "--set", "train.epoch=3")
    assert stopped.value.code == 2
    assert "train.epoch" in capsys.readouterr().err


def test_profile_trace_has_named_ranges(data_dir: str, tmp_path: Path):
    out = tmp_path / "run"
    run_train(
        data_dir, out, "--set", "train.epochs=1", "--profile", "--profile-steps", "3"
    )
    traces = list((out / "profile").glob("*.json"))
    assert len(traces) == 1
    names = {
        event.get("name") for event in json.loads(traces[0].read_text())["traceEvents"]
    }
    for stage in ("data_wait", "forward", "backward", "optimizer_step"):
        assert stage in names, stage


def test_sigterm_saves_and_resume_finishes(data_dir: str, tmp_path: Path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fastrec.train",
        "--config",
        TINY,
        "--data-dir",
        data_dir,
        "--out-dir",
        str(out),
        "--set",
        "train.epochs=200",
        "--set",
        "train.batch_size=8",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err.decode()
    assert "continue with --resume" in err.decode()
    epoch = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert epoch < 200

    resume = [*command[:-4], "--set", "train.epochs=200", "--set", "train.batch_size=8"]
    resume += ["--set", "train.patience=1", "--resume"]
    # A different patience changes no store key, so the resumed run stops early.
    finished = subprocess.run(
        resume, env=env, cwd=REPO, capture_output=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert (out / "metrics.json").is_file()
