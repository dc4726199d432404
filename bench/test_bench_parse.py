"""Benchmarks: read_ratings against pandas' python engine on ratings.dat.

Run with ``python -m pytest bench/test_bench_parse.py --benchmark-only``. The
synthetic file has 1,000,000 lines in ML-1M's format and is written once per
module. Set FASTREC_DATA_DIR to an ml-1m folder to also time the real file.
pandas needs the python engine because its C engine takes only one-character
separators, and ratings.dat uses "::".
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from fastrec.data.movielens import load_movielens, read_ratings
from fastrec.data.synthetic import write_synthetic_movielens

N_RATINGS = 1_000_000
ML1M_RATINGS = 1_000_209
COLUMNS = ["user", "item", "rating", "timestamp"]


def read_with_pandas(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="::", engine="python", header=None, names=COLUMNS)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ML-1M's shape: 6,040 users, 3,883 movies of which 177 are never rated.
    return write_synthetic_movielens(
        tmp_path_factory.mktemp("bench") / "ml-1m",
        n_users=6040,
        n_movies=3883,
        n_unrated=177,
        mean_ratings=N_RATINGS / 6040,
    )


@pytest.fixture(scope="module")
def real_dir() -> Path:
    folder = os.environ.get("FASTREC_DATA_DIR")
    if not folder or not (Path(folder) / "ratings.dat").is_file():
        pytest.skip("FASTREC_DATA_DIR does not point at an ml-1m folder")
    return Path(folder)


@pytest.mark.benchmark(group="ratings-synthetic-1m")
def test_read_ratings_synthetic(benchmark, synthetic_dir: Path):
    path = synthetic_dir / "ratings.dat"
    ratings = benchmark.pedantic(
        read_ratings, args=(path,), rounds=5, iterations=1, warmup_rounds=1
    )
    assert len(ratings) == N_RATINGS


@pytest.mark.benchmark(group="ratings-synthetic-1m")
def test_pandas_python_engine_synthetic(benchmark, synthetic_dir: Path):
    path = synthetic_dir / "ratings.dat"
    frame = benchmark.pedantic(read_with_pandas, args=(path,), rounds=1, iterations=1)
    assert len(frame) == N_RATINGS


@pytest.mark.benchmark(group="load-synthetic-1m")
def test_load_movielens_synthetic(benchmark, synthetic_dir: Path):
    data = benchmark.pedantic(
        load_movielens, args=(synthetic_dir,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert len(data.ratings) == N_RATINGS


@pytest.mark.benchmark(group="ratings-ml1m")
def test_read_ratings_real(benchmark, real_dir: Path):
    path = real_dir / "ratings.dat"
    ratings = benchmark.pedantic(
        read_ratings, args=(path,), rounds=5, iterations=1, warmup_rounds=1
    )
    assert len(ratings) == ML1M_RATINGS


@pytest.mark.benchmark(group="ratings-ml1m")
def test_pandas_python_engine_real(benchmark, real_dir: Path):
    path = real_dir / "ratings.dat"
    frame = benchmark.pedantic(read_with_pandas, args=(path,), rounds=1, iterations=1)
    assert len(frame) == ML1M_RATINGS


@pytest.mark.benchmark(group="load-ml1m")
def test_load_movielens_real(benchmark, real_dir: Path):
    data = benchmark.pedantic(
        load_movielens, args=(real_dir,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert len(data.ratings) == ML1M_RATINGS
