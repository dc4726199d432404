"""Run configuration: one dataclass per component, YAML files and ``--set`` overrides.

Defaults live only in the dataclasses. A YAML file overrides some of them, and
``--set section.key=value`` overrides the result. An unknown section or key is a
ConfigError that names it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .baselines import BASELINES
from .errors import ConfigError
from .model import ModelConfig

SPLITS = ("loo", "windows")
EVAL_BACKENDS = ("auto", "triton", "torch")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require_int(section: str, name: str, value: Any, minimum: int) -> None:
    """Raise ConfigError unless ``value`` is an integer of at least ``minimum``."""
    if not (_is_int(value) and value >= minimum):
        raise ConfigError(
            f"{section}.{name}={value!r} is invalid; use an integer >= {minimum}"
        )


def _require_real(
    section: str, name: str, value: Any, minimum: float | None, strict: bool = False
) -> None:
    """Raise ConfigError unless ``value`` is a finite number above ``minimum``.

    ``strict`` excludes ``minimum`` itself, and ``minimum=None`` allows any sign.
    """
    valid = _is_real(value) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if strict else value >= minimum
    if not valid:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ConfigError(
            f"{section}.{name}={value!r} is invalid; use a finite number{bound}"
        )


@dataclass
class DataConfig:
    """Where the data lives and how it is split into windows."""

    data_dir: str = "data/ml-1m"
    """Folder with ratings.dat, movies.dat and users.dat."""
    download: bool = True
    """Fetch MovieLens-1M into ``data_dir`` when the files are missing."""
    split: str = "loo"
    """``loo``: leave-one-out by time; ``windows``: the tutorial's shuffled windows."""
    max_len: int = 200
    """Window length T: the number of input items per row."""
    stride: int = 200
    """Step between the targets of consecutive training windows of one user."""
    min_history: int = 1
    """Minimum number of real input items in a training window."""
    holdout_fraction: float = 0.1
    """``windows`` only: fraction of windows held out, half validation, half test."""
    seed: int = 0
    """Seed of the ``windows`` shuffle."""
    store: str = ""
    """Path of the window store; empty means ``<data_dir>/stores/<split>-<key>.arrow``."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(
                f"data.split={self.split!r} is invalid; use one of {SPLITS}"
            )
        for name in ("max_len", "stride", "min_history"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"data.{name}={getattr(self, name)} must be at least 1"
                )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(
                f"data.holdout_fraction={self.holdout_fraction} must be in (0, 1)"
            )
        if self.split == "windows" and self.min_history > self.max_len:
            raise ConfigError(
                f"data.min_history={self.min_history} exceeds data.max_len={self.max_len}"
            )

    def split_params(self) -> dict[str, Any]:
        """Return the fields that decide the store's rows (its cache key)."""
        params = {
            "split": self.split,
            "max_len": self.max_len,
            "stride": self.stride,
            "min_history": self.min_history,
        }
        if self.split == "windows":
            params.update(holdout_fraction=self.holdout_fraction, seed=self.seed)
        return params


@dataclass
class TrainConfig:
    """Optimization, precision and run control."""

    epochs: int = 10
    """Maximum number of epochs."""
    batch_size: int = 64
    """Windows per step (per process under DDP)."""
    lr: float = 2e-3
    """Peak learning rate of AdamW for the global batch (batch_size x world size
    windows under DDP), used as given for every world size."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to embeddings, norms and biases)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    warmup_steps: int = 50
    """Linear warm-up steps before the cosine decay."""
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 turns clipping off."""
    objective: str = "auto"
    """``all``: predict the next item at every position; ``last``: only after the
    window; ``auto``: ``all`` for the dot head, ``last`` for the interaction head."""
    rating_weight: float = 0.0
    """Loss weight 1 + rating_weight * (rating - 3) per target; 0 weighs all equally."""
    amp: bool = True
    """Mixed precision: bf16 autocast where supported, else fp16 with a grad scaler."""
    compile: str = "auto"
    """torch.compile the model: ``auto`` (on CUDA only), ``true`` or ``false``."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    seed: int = 0
    """Seed of the model init, dropout and the per-epoch shuffle."""
    patience: int = 5
    """Stop after this many epochs without a better validation NDCG@10; 0 never stops."""
    prefetch: int = 2
    """Batches the loader prepares ahead of the training step."""
    eval_every: int = 1
    """Validate every this many epochs."""
    max_steps_per_epoch: int = 0
    """Stop an epoch after this many steps; 0 runs the whole epoch (for smoke tests)."""

    def __post_init__(self) -> None:
        if not isinstance(self.betas, (list, tuple)):
            raise ConfigError(
                f"train.betas={self.betas!r} is invalid; use two numbers in [0, 1)"
            )
        self.betas = tuple(self.betas)  # YAML gives lists
        if self.objective not in ("auto", "all", "last"):
            raise ConfigError(f"train.objective={self.objective!r} is invalid")
        if str(self.compile).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"train.compile={self.compile!r} is invalid")
        self.compile = str(self.compile).lower()
        for name in ("epochs", "batch_size", "eval_every"):
            _require_int("train", name, getattr(self, name), 1)
        for name in ("warmup_steps", "patience", "prefetch", "max_steps_per_epoch"):
            _require_int("train", name, getattr(self, name), 0)
        _require_real("train", "lr", self.lr, 0.0, strict=True)
        for name in ("min_lr", "weight_decay", "grad_clip"):
            _require_real("train", name, getattr(self, name), 0.0)
        _require_real("train", "rating_weight", self.rating_weight, None)
        if self.min_lr > self.lr:
            raise ConfigError(
                f"train.min_lr={self.min_lr} is above train.lr={self.lr}, so the "
                "cosine decay would raise the learning rate; set min_lr <= lr"
            )
        self._check_betas()

    def _check_betas(self) -> None:
        betas = self.betas
        valid = len(betas) == 2 and all(
            _is_real(beta) and 0.0 <= beta < 1.0 for beta in betas
        )
        if not valid:
            raise ConfigError(
                f"train.betas={list(betas)!r} is invalid; use two numbers in [0, 1)"
            )


@dataclass
class EvalConfig:
    """Ranking evaluation."""

    ks: list[int] = field(default_factory=lambda: [10, 50])
    """Cut-offs K of every ranking metric."""
    batch_size: int = 512
    """Users per evaluation batch."""
    backend: str = "auto"
    """Top-K backend: ``auto`` (Triton on CUDA), ``triton`` or ``torch``."""
    baselines: list[str] = field(
        default_factory=lambda: ["most_popular", "top_rated", "recent_popular"]
    )
    """Baselines reported next to the model."""
    max_users: int = 0
    """Evaluate only the first N rows of a split; 0 evaluates all (for smoke tests)."""

    def __post_init__(self) -> None:
        ks = self.ks
        valid = isinstance(ks, (list, tuple)) and len(ks) > 0
        if not (valid and all(_is_int(k) and k >= 1 for k in ks)):
            raise ConfigError(
                f"eval.ks={ks!r} is invalid; use a non-empty list of integers >= 1"
            )
        self.ks = sorted({int(k) for k in ks})
        _require_int("eval", "batch_size", self.batch_size, 1)
        _require_int("eval", "max_users", self.max_users, 0)
        if self.backend not in EVAL_BACKENDS:
            raise ConfigError(
                f"eval.backend={self.backend!r} is invalid; use one of {EVAL_BACKENDS}"
            )
        known = ", ".join(sorted(BASELINES))
        if not isinstance(self.baselines, (list, tuple)):
            raise ConfigError(
                f"eval.baselines={self.baselines!r} is invalid; use a list of: {known}"
            )
        for name in self.baselines:
            if name not in BASELINES:
                raise ConfigError(
                    f"eval.baselines contains unknown baseline {name!r}; "
                    f"use any of: {known}"
                )


# Model fields that come from the data, never from a config file.
DERIVED_MODEL_FIELDS = ("vocab_size", "n_users", "max_len", "n_special")


def default_model_config() -> ModelConfig:
    """Return the model of the bare ``python -m fastrec.train`` run.

    ModelConfig's own defaults are the tutorial's model; the default run uses the
    dot head, which trains at every position and ranks far better on ``loo``.
    vocab_size, n_users, max_len and n_special are placeholders here and are set
    from the window store when the model is built.
    """
    return ModelConfig(
        vocab_size=4,
        n_users=1,
        max_len=DataConfig.max_len,
        head="dot",
        d_model=64,
        n_layers=2,
        n_heads=2,
        d_ff=256,
        dropout=0.2,
        attention_dropout=0.0,
        init_range=0.0,
        n_special=0,
    )


@dataclass
class Config:
    """A whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: default_model_config())
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "default"
    """Run name; the default output folder is ``runs/<name>``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data (for checkpoints and logs)."""
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (numbers, booleans, lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse value {text!r}: {error}") from error


def _coerce(value: Any, current: Any, path: str) -> Any:
    """Convert ``value`` to the type of the field's current value, or raise."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        # PyYAML reads "1e-3" (no dot) as a string, so numeric strings are accepted.
        try:
            if not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
    elif isinstance(current, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            return str(value).lower()
    elif isinstance(current, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(current)(value)
    else:
        return value
    raise ConfigError(
        f"invalid value for {path}: {value!r} (expected {type(current).__name__})"
    )


def _merge(base: Any, updates: dict[str, Any], where: str) -> Any:
    """Return ``base`` with ``updates`` applied, rejecting unknown keys."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {updates!r}")
    known = {f.name: f for f in dataclasses.fields(base)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if where == "model" and key in DERIVED_MODEL_FIELDS:
            raise ConfigError(
                f"{path} is set from the data; change data.max_len or the data instead"
            )
        if key not in known:
            raise ConfigError(
                f"unknown config key {path!r}; known keys: {', '.join(sorted(known))}"
            )
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            value = _merge(current, value, path)
        else:
            value = _coerce(value, current, path)
        changes[key] = value
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as error:
        raise ConfigError(f"invalid value in {where or 'config'}: {error}") from error


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Build a Config from the defaults, an optional YAML file and ``key=value`` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(
                f"config file {path} is not valid YAML: {error}"
            ) from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections")
        updates = loaded
    else:
        updates = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = _parse_value(text)
        _deep_update(updates, nested)
    # One merge validates each section once, with every override applied, so the
    # order of overrides that depend on each other does not matter.
    return _merge(config, updates, "")


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    """Merge ``source`` into ``target`` in place; a later scalar wins."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
