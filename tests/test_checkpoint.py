"""Checkpoint files: round trip, the tensor digest and damaged tensor bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastrec.checkpoint import (
    DIGEST_KEY,
    FORMAT_VERSION,
    load_checkpoint,
    save_checkpoint,
    tensor_digest,
)
from fastrec.errors import DataError


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


def test_checkpoint_without_digest_still_loads(tmp_path: Path):
    path = tmp_path / "old.pt"
    torch.save(dict(sample_state(), format_version=FORMAT_VERSION), path)
    assert load_checkpoint(path)["epoch"] == 3


def test_digest_depends_on_values_and_names():
    state = sample_state()
    other = sample_state()
    assert tensor_digest(state) == tensor_digest(other)
    other["model"]["layer.bias"][0] = 1.0
    assert tensor_digest(state) != tensor_digest(other)
    renamed = sample_state()
    renamed["model"]["other.bias"] = renamed["model"].pop("layer.bias")
    assert tensor_digest(state) != tensor_digest(renamed)


def test_digest_of_bf16_and_scalar_tensors():
    value = {"a": torch.ones(3, dtype=torch.bfloat16), "b": torch.tensor(2)}
    assert len(tensor_digest(value)) == 64
