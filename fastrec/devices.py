"""Parsing of the device settings that the command lines and configs accept."""

from __future__ import annotations

import torch

from .errors import ConfigError


def parse_device(name: str, option: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device, or raise ConfigError.

    ``auto`` picks CUDA when it is available. ``option`` names the setting in the
    messages, for example ``--device`` or ``train.device``. A bare ``cuda`` keeps
    no index, so the caller decides which GPU it means.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    invalid = f"{option} {name!r} is invalid; use auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(invalid) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(invalid)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{option} {name} needs CUDA but no CUDA device is available; "
                f"use {option} cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{option} {name} is invalid: only {torch.cuda.device_count()} "
                "CUDA devices are visible"
            )
    return device
