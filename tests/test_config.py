"""Config validation: invalid values raise a ConfigError that names the key."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastrec import evaluate, train
from fastrec.config import EvalConfig, TrainConfig, load_config
from fastrec.errors import ConfigError
from fastrec.files import UMASK


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.min_lr=-1e-5", "train.min_lr"),
        ("train.min_lr=1e-2", "train.min_lr"),
        ("train.betas=[0.9]", "train.betas"),
        ("train.betas=[0.9, 1.0]", "train.betas"),
        ("train.betas=[-0.1, 0.9]", "train.betas"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
        ("train.grad_clip=-1", "train.grad_clip"),
        ("train.patience=-1", "train.patience"),
        ("train.prefetch=-1", "train.prefetch"),
        ("train.eval_every=0", "train.eval_every"),
        ("train.max_steps_per_epoch=-1", "train.max_steps_per_epoch"),
        ("train.rating_weight=.nan", "train.rating_weight"),
        ("eval.ks=[1.5]", "eval.ks"),
        ("eval.ks=[a]", "eval.ks"),
        ("eval.ks=[0, 10]", "eval.ks"),
        ("eval.ks=[]", "eval.ks"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.backend=cuda", "eval.backend"),
        ("eval.baselines=[most_popular, random]", "eval.baselines"),
        ("eval.max_users=-1", "eval.max_users"),
    ],
)
def test_invalid_override_names_key(override: str, key: str):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    message = str(raised.value)
    assert key in message
    assert "\n" not in message


def test_valid_edge_values_load():
    config = load_config(
        None,
        [
            "train.min_lr=0",
            "train.betas=[0.0, 0.999]",
            "train.grad_clip=0",
            "train.warmup_steps=0",
            "train.rating_weight=-0.5",
            "eval.ks=[50, 1, 10]",
            "eval.baselines=[]",
        ],
    )
    assert config.train.betas == (0.0, 0.999)
    assert config.eval.ks == [1, 10, 50]
    assert config.eval.baselines == []


@pytest.mark.parametrize("ks", [[1.5], ["a"], [True], 10])
def test_eval_config_rejects_non_integer_ks(ks):
    with pytest.raises(ConfigError, match="eval.ks"):
        EvalConfig(ks=ks)


def test_train_config_rejects_scalar_betas():
    with pytest.raises(ConfigError, match="train.betas"):
        TrainConfig(betas=0.9)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.demographics=true", "model.use_user=true"],
        ["model.use_user=true", "model.demographics=true"],
    ],
)
def test_dependent_overrides_any_order(overrides: list[str]):
    config = load_config(None, overrides)
    assert config.model.demographics is True
    assert config.model.use_user is True


def test_yaml_and_override_validated_together(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  demographics: true\n")
    config = load_config(path, ["model.use_user=true"])
    assert config.model.demographics is True


def exit_message(main, argv: list[str], capsys) -> str:
    """Run a CLI ``main`` that must fail and return its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_train_out_dir_under_file_exits_2(tmp_path: Path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    for out_dir in (blocker, blocker / "run"):
        argv = ["--data-dir", str(tmp_path / "absent"), "--out-dir", str(out_dir)]
        message = exit_message(train.main, argv, capsys)
        assert str(out_dir) in message
        assert str(blocker) in message
    assert not (tmp_path / "absent").exists()


def test_train_profile_steps_zero_exits_2(tmp_path: Path, capsys):
    argv = ["--out-dir", str(tmp_path / "run"), "--profile", "--profile-steps", "0"]
    message = exit_message(train.main, argv, capsys)
    assert "--profile-steps" in message


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--device", "tpu0"], "--device"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "cpu", "--backend", "triton"], "TRITON_INTERPRET"),
    ],
)
def test_evaluate_bad_argument_exits_2(
    tmp_path: Path, capsys, monkeypatch, extra, needle
):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    # The checkpoint does not exist, so only an argument check can fail here.
    argv = ["--checkpoint", str(tmp_path / "best.pt"), *extra]
    message = exit_message(evaluate.main, argv, capsys)
    assert needle in message


def test_evaluate_cuda_unavailable_exits_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate.torch.cuda, "is_available", lambda: False)
    argv = ["--checkpoint", str(tmp_path / "best.pt"), "--device", "cuda"]
    message = exit_message(evaluate.main, argv, capsys)
    assert "CUDA" in message


def test_evaluate_bad_json_path_exits_2(tmp_path: Path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    for json_path in (tmp_path, blocker / "metrics.json"):
        argv = ["--checkpoint", str(tmp_path / "best.pt"), "--json", str(json_path)]
        argv += ["--device", "cpu"]
        message = exit_message(evaluate.main, argv, capsys)
        assert str(json_path) in message


def test_write_metrics_removes_temp_on_failure(tmp_path: Path):
    target = tmp_path / "metrics.json"
    with pytest.raises(TypeError):
        evaluate.write_metrics(target, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_written_metrics_follow_the_umask(tmp_path: Path):
    target = tmp_path / "metrics.json"
    evaluate.write_metrics(target, {"HR@10": 0.5})
    assert target.stat().st_mode & 0o777 == 0o666 & ~UMASK


def test_ctrl_c_ends_as_killed_by_sigint():
    # A shell loop around the command stops only on a death by the signal.
    code = (
        "from fastrec.errors import exit_on_user_error\n"
        "@exit_on_user_error\n"
        "def main():\n"
        "    raise KeyboardInterrupt\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGINT
    assert result.stderr == "interrupted\n"
