"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python data only: the model's
parameters (without ``_orig_mod.`` or ``module.`` prefixes), the model and run
configs, optimizer, scheduler and grad-scaler states, the position in training,
the RNG states and the window store's metadata. ``content_sha256`` is a digest of
all of it, checked on load, because the zip container that torch.save writes does
not detect damaged bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .files import temporary_sibling
from .model import ModelConfig, SequentialRecommender, strip_state_dict_prefixes

# Format 2 added the content digest.
FORMAT_VERSION = 2
DIGEST_KEY = "content_sha256"


def content_digest(value: Any) -> str:
    """Return the sha256 hex digest of a nested dict/list value and its tensors.

    Every leaf adds its path in the value and its type. A tensor adds its dtype,
    shape and bytes, any other leaf its repr, and dict keys go in sorted order, so
    two values with equal contents give equal digests.
    """
    digest = hashlib.sha256()

    def visit(item: Any, where: str) -> None:
        if isinstance(item, torch.Tensor):
            data = item.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{where}|tensor|{item.dtype}|{tuple(item.shape)}|".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            digest.update(f"{where}|dict|{len(item)}|".encode())
            for key in sorted(item, key=repr):
                visit(item[key], f"{where}/{key!r}")
        elif isinstance(item, list | tuple):
            digest.update(f"{where}|{type(item).__name__}|{len(item)}|".encode())
            for index, element in enumerate(item):
                visit(element, f"{where}[{index}]")
        else:
            digest.update(f"{where}|{type(item).__name__}|{item!r}|".encode())

    visit(value, "")
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_sibling(path)
    os.close(fd)
    try:
        record = dict(state, format_version=FORMAT_VERSION)
        record[DIGEST_KEY] = content_digest(record)
        torch.save(record, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a bad file raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise DataError(
            f"checkpoint {path} cannot be read ({type(error).__name__}): the file is "
            "truncated, damaged or not a fastrec checkpoint; use the best.pt or "
            "last.pt of a fastrec.train run"
        ) from error
    version = state.get("format_version") if isinstance(state, dict) else None
    if version not in (1, FORMAT_VERSION):
        raise DataError(
            f"{path} is not a fastrec checkpoint of format 1 or {FORMAT_VERSION}"
        )
    # Format 1 checkpoints were written before the digest and load without it.
    expected = state.pop(DIGEST_KEY, None)
    if version == FORMAT_VERSION and content_digest(state) != expected:
        raise DataError(
            f"checkpoint {path} is damaged: its contents do not match the digest "
            "written with them; use the other of best.pt and last.pt or train again"
        )
    return state


def model_from_checkpoint(
    state: dict[str, Any], device: torch.device | str = "cpu"
) -> SequentialRecommender:
    """Rebuild the model of a checkpoint and load its weights strictly."""
    config = ModelConfig(**state["model_config"])
    weights = strip_state_dict_prefixes(state["model"])
    genres = weights.get("item_genres")
    codes = weights.get("user_codes")
    model = SequentialRecommender(config, item_genres=genres, user_codes=codes)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise DataError(
            f"the checkpoint's weights do not fit its model config ({first}); "
            "use a best.pt or last.pt that fastrec.train wrote"
        ) from error
    return model.to(device).eval()


def rng_state() -> dict[str, Any]:
    """Return the torch CPU and CUDA generator states."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states saved by ``rng_state``."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
