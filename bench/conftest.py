"""Shared fixtures of the benchmarks: ML-1M-sized data, prepared stores and configs.

By default the benchmarks run on synthetic files with ML-1M's size (6,040 users,
3,706 rated movies out of 3,883, 1,000,209 ratings), written once per session.
Set ``FASTREC_DATA_DIR`` to an ml-1m folder to run them on the real files.

Every benchmark records its throughput with the ``throughput`` fixture. At the
end of the session the speedups of fastrec over the baselines are printed, and
nothing about time is asserted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fastrec.config import Config, load_config
from fastrec.data.prepare import PreparedData, prepare
from fastrec.data.synthetic import write_synthetic_movielens

REPO_ROOT = Path(__file__).resolve().parent.parent
TUTORIAL_CONFIG = REPO_ROOT / "configs" / "tutorial.yaml"
DATA_DIR_VARIABLE = "FASTREC_DATA_DIR"

# ML-1M's sizes: 3,883 movies of which 3,706 are rated, 1,000,209 ratings by 6,040
# users, each with at least 20.
ML1M_USERS = 6040
ML1M_MOVIES = 3883
ML1M_UNRATED = 177
ML1M_RATINGS = 1_000_209

# The dot-head leave-one-out case keeps the default config's model but uses
# windows of 50 (not 200), so that one training step takes about a second on two
# CPU cores and the whole suite stays within a few minutes.
DOT_OVERRIDES = ("data.max_len=50", "data.stride=50")

# (fastrec benchmark, baseline benchmark) pairs whose throughput ratio is printed.
SPEEDUP_PAIRS = {
    "data preparation rows/s": ("store_build_rows", "tutorial_prepare_rows"),
    "loader samples/s": ("batch_loader", "torch_dataloader"),
    "train step samples/s, compiled fp32 over the tutorial's step": (
        "train_tutorial_compiled_fp32",
        "train_tutorial_way",
    ),
    "train step, tutorial model, compiled over eager (fp32)": (
        "train_tutorial_compiled_fp32",
        "train_tutorial_eager_fp32",
    ),
    "train step, tutorial model, bf16 over fp32": (
        "train_tutorial_eager_bf16",
        "train_tutorial_eager_fp32",
    ),
    "train step, tutorial model, compiled over eager (bf16)": (
        "train_tutorial_compiled_bf16",
        "train_tutorial_eager_bf16",
    ),
    "train step, dot model, bf16 over fp32": (
        "train_dot_eager_bf16",
        "train_dot_eager_fp32",
    ),
    "train step, dot model, compiled over eager (bf16)": (
        "train_dot_compiled_bf16",
        "train_dot_eager_bf16",
    ),
    "eval users/s, tutorial model": ("evaluator_tutorial", "tutorial_eval_tutorial"),
    "eval users/s, tutorial model, compiled": (
        "evaluator_tutorial_compiled",
        "tutorial_eval_tutorial",
    ),
    "eval users/s, dot-head loo model": ("evaluator_dot", "tutorial_eval_dot"),
}
_THROUGHPUT_KEY = pytest.StashKey[dict[str, float]]()

Record = Callable[[str, float], None]


def pytest_configure(config: pytest.Config) -> None:
    """Create the session's throughput table."""
    config.stash[_THROUGHPUT_KEY] = {}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config):
    """Print each measured throughput and the speedup of fastrec over its baseline."""
    table = config.stash.get(_THROUGHPUT_KEY, {})
    if not table:
        return
    terminalreporter.section("fastrec throughput")
    for name, value in table.items():
        terminalreporter.write_line(f"{name:>28}: {value:14,.1f} per s")
    for label, (ours, baseline) in SPEEDUP_PAIRS.items():
        if ours in table and baseline in table and table[baseline] > 0:
            ratio = table[ours] / table[baseline]
            terminalreporter.write_line(f"speedup, {label}: {ratio:.1f}x")


@pytest.fixture()
def throughput(request: pytest.FixtureRequest, benchmark) -> Record:
    """Return a function that records a throughput in extra_info and the summary."""
    table = request.config.stash[_THROUGHPUT_KEY]

    def record(name: str, per_second: float) -> None:
        benchmark.extra_info["per_second"] = per_second
        table[name] = per_second

    return record


@pytest.fixture(scope="session")
def ml1m_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the ml-1m folder of the session: FASTREC_DATA_DIR or synthetic files."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if configured:
        folder = Path(configured)
        if not (folder / "ratings.dat").is_file():
            raise pytest.UsageError(
                f"{DATA_DIR_VARIABLE}={configured} has no ratings.dat; point it at an "
                "ml-1m folder or unset it to use synthetic data"
            )
        return folder
    folder = tmp_path_factory.mktemp("bench-data") / "ml-1m"
    return write_synthetic_movielens(
        folder,
        n_users=ML1M_USERS,
        n_movies=ML1M_MOVIES,
        n_unrated=ML1M_UNRATED,
        min_ratings=20,
        mean_ratings=ML1M_RATINGS / ML1M_USERS,
    )


def bench_config(
    path: Path | None, data_dir: Path, overrides: tuple[str, ...] = ()
) -> Config:
    """Load a config for a CPU benchmark on ``data_dir`` (no download, no compile)."""
    settings = [
        "data.download=false",
        "train.device=cpu",
        "train.compile=false",
        *overrides,
    ]
    config = load_config(path, settings)
    config.data = dataclasses.replace(config.data, data_dir=str(data_dir))
    return config


@pytest.fixture(scope="session")
def tutorial_config(ml1m_dir: Path) -> Config:
    """Return configs/tutorial.yaml on the session's data, for the CPU."""
    return bench_config(TUTORIAL_CONFIG, ml1m_dir)


@pytest.fixture(scope="session")
def dot_config(ml1m_dir: Path) -> Config:
    """Return the default (dot head, leave-one-out) config with windows of 50."""
    return bench_config(None, ml1m_dir, DOT_OVERRIDES)


@pytest.fixture(scope="session")
def windows_prepared(
    tutorial_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> PreparedData:
    """Return the tutorial's windows store, built once into a session folder."""
    store = tmp_path_factory.mktemp("bench-stores") / "windows.arrow"
    return prepare(tutorial_config.data, store=store)


@pytest.fixture(scope="session")
def loo_prepared(
    dot_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> PreparedData:
    """Return the leave-one-out store of the dot-head case."""
    store = tmp_path_factory.mktemp("bench-stores") / "loo.arrow"
    return prepare(dot_config.data, store=store)
