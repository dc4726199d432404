"""Checkpoint files: round trip, the content digest and damaged bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fastrec.checkpoint import (
    DIGEST_KEY,
    FORMAT_VERSION,
    content_digest,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from fastrec.errors import DataError
from fastrec.model import ModelConfig, SequentialRecommender


def sample_state() -> dict:
    # A recognizable byte pattern, so a test can find the tensor in the file.
    weights = torch.arange(4096, dtype=torch.float32) + 0.5
    return {
        "model": {"layer.weight": weights, "layer.bias": torch.zeros(3)},
        "optimizer": {"state": {0: {"step": torch.tensor(7.0)}}, "groups": [1, 2]},
        "epoch": 3,
    }


def test_round_trip_keeps_tensors(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, sample_state())
    state = load_checkpoint(path)
    assert state["epoch"] == 3
    assert torch.equal(
        state["model"]["layer.weight"], sample_state()["model"]["layer.weight"]
    )
    assert DIGEST_KEY not in state


def test_damaged_tensor_bytes_are_reported(tmp_path: Path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, sample_state())
    blob = bytearray(path.read_bytes())
    pattern = (torch.arange(16, dtype=torch.float32) + 1000.5).numpy().tobytes()
    start = bytes(blob).find(pattern)
    assert start > 0
    blob[start : start + 64] = bytes(64)
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="is damaged"):
        load_checkpoint(path)


def test_format_one_loads_without_digest(tmp_path: Path):
    path = tmp_path / "old.pt"
    torch.save(dict(sample_state(), format_version=1), path)
    assert load_checkpoint(path)["epoch"] == 3


def test_damaged_config_value_is_reported(tmp_path: Path):
    path = tmp_path / "best.pt"
    state = sample_state()
    state["model_config"] = {"max_len": 123456789}
    save_checkpoint(path, state)
    blob = path.read_bytes()
    # pickle stores an int of this size as 4 little-endian bytes.
    packed = (123456789).to_bytes(4, "little")
    start = blob.find(packed)
    assert start > 0
    damaged = blob[:start] + (123456788).to_bytes(4, "little") + blob[start + 4 :]
    path.write_bytes(damaged)
    with pytest.raises(DataError, match="is damaged"):
        load_checkpoint(path)


def test_current_format_needs_the_digest(tmp_path: Path):
    path = tmp_path / "nodigest.pt"
    torch.save(dict(sample_state(), format_version=FORMAT_VERSION), path)
    with pytest.raises(DataError, match="is damaged"):
        load_checkpoint(path)


def test_digest_depends_on_values_and_names():
    state = sample_state()
    other = sample_state()
    assert content_digest(state) == content_digest(other)
    other["model"]["layer.bias"][0] = 1.0
    assert content_digest(state) != content_digest(other)
    renamed = sample_state()
    renamed["model"]["other.bias"] = renamed["model"].pop("layer.bias")
    assert content_digest(state) != content_digest(renamed)
    changed = sample_state()
    changed["epoch"] = 4
    assert content_digest(state) != content_digest(changed)
    # An int key and its string are different keys.
    assert content_digest({0: 1}) != content_digest({"0": 1})


def test_digest_of_bf16_and_scalar_tensors():
    value = {"a": torch.ones(3, dtype=torch.bfloat16), "b": torch.tensor(2)}
    assert len(content_digest(value)) == 64


def test_weights_that_do_not_fit_the_config():
    config = ModelConfig(vocab_size=12, n_users=3, max_len=5, d_model=8, n_heads=2)
    weights = SequentialRecommender(config).state_dict()
    wider = dataclasses.asdict(config) | {"max_len": 6}
    with pytest.raises(DataError, match="do not fit its model config"):
        model_from_checkpoint({"model_config": wider, "model": weights})
