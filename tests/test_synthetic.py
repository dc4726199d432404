"""The synthetic MovieLens-1M generator, read back through the parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastrec.data import synthetic
from fastrec.data.movielens import (
    AGE_GROUPS_ML1M,
    GENRES_ML1M,
    MovieLens,
    load_movielens,
)
from fastrec.data.synthetic import write_synthetic_movielens
from fastrec.errors import ConfigError

SMALL = {
    "n_users": 30,
    "n_movies": 40,
    "n_unrated": 3,
    "min_ratings": 5,
    "mean_ratings": 12,
}


@pytest.fixture(scope="module")
def data(synthetic_ml1m: Path) -> MovieLens:
    return load_movielens(synthetic_ml1m)


def genre_shares(data: MovieLens) -> np.ndarray:
    """Return a (max movie id + 1, 18) matrix of each movie's genres, rows sum to 1."""
    shares = np.zeros((data.movies.movie_id.max() + 1, len(GENRES_ML1M)))
    for movie_id, genres in zip(data.movies.movie_id, data.movies.genres):
        for genre in genres:
            shares[movie_id, GENRES_ML1M.index(genre)] = 1 / len(genres)
    return shares


def user_genre_profile(user: np.ndarray, item: np.ndarray, shares: np.ndarray):
    """Return each user's genre distribution over the movies they rated."""
    profile = np.zeros((user.max() + 1, shares.shape[1]))
    np.add.at(profile, user, shares[item])
    profile[1:] /= profile[1:].sum(axis=1, keepdims=True)
    return profile


def test_synthetic_counts(data: MovieLens):
    assert data.name == "ml-1m"
    assert len(data.users) == 200
    assert len(data.movies) == 300
    assert len(data.ratings) == 200 * 60


def test_synthetic_min_ratings_per_user(data: MovieLens):
    per_user = np.bincount(data.ratings.user)[1:]
    assert len(per_user) == 200
    assert per_user.min() >= 20


def test_synthetic_unrated_movies(data: MovieLens):
    rated = np.isin(data.movies.movie_id, data.ratings.item)
    assert (~rated).sum() >= 10


def test_synthetic_no_repeated_pairs(data: MovieLens):
    pairs = data.ratings.user.astype(np.int64) * 10**6 + data.ratings.item
    assert len(np.unique(pairs)) == len(pairs)


def test_synthetic_ratings_cover_scale(data: MovieLens):
    assert set(np.unique(data.ratings.rating).tolist()) == {1, 2, 3, 4, 5}


def test_synthetic_timestamps_in_ml1m_range(data: MovieLens):
    assert data.ratings.timestamp.min() >= synthetic.FIRST_TIMESTAMP
    assert data.ratings.timestamp.max() <= synthetic.LAST_TIMESTAMP


def test_synthetic_shared_timestamps(data: MovieLens):
    keys = data.ratings.user.astype(np.int64) * 2**32 + data.ratings.timestamp
    repeated = 1 - len(np.unique(keys)) / len(keys)
    assert 0.4 < repeated < 0.65


def test_synthetic_file_order_not_time_order(data: MovieLens):
    user, timestamp = data.ratings.user, data.ratings.timestamp
    same_user = user[1:] == user[:-1]
    assert (np.diff(timestamp)[same_user] < 0).any()


def test_synthetic_users_grouped_in_file(data: MovieLens):
    assert (np.diff(data.ratings.user) >= 0).all()


def test_synthetic_popularity_skew(data: MovieLens):
    counts = np.sort(np.bincount(data.ratings.item))[::-1]
    top_tenth = counts[: len(data.movies) // 10].sum()
    # A uniform choice would give the top tenth of movies about 10% of ratings.
    assert top_tenth / len(data.ratings) > 0.18


def test_synthetic_taste_shapes_choice(data: MovieLens):
    shares = genre_shares(data)
    user, item = data.ratings.user, data.ratings.item
    overall = shares[item].sum(axis=0) / len(item)
    profile = user_genre_profile(user, item, shares)[1:]
    shuffled = np.random.default_rng(0).permutation(len(item))
    baseline = user_genre_profile(user, item[shuffled], shares)[1:]
    distance = np.abs(profile - overall).sum(axis=1).mean()
    baseline_distance = np.abs(baseline - overall).sum(axis=1).mean()
    assert distance > 1.5 * baseline_distance


def test_synthetic_taste_shapes_rating(data: MovieLens):
    shares = genre_shares(data)
    user, item = data.ratings.user, data.ratings.item
    profile = user_genre_profile(user, item, shares)
    fit = (profile[user] * shares[item]).sum(axis=1)
    assert np.corrcoef(fit, data.ratings.rating)[0, 1] > 0.05


def test_synthetic_titles(data: MovieLens):
    titles = data.movies.title
    assert any("é" in title for title in titles)
    assert any(":" in title for title in titles)
    assert (data.movies.years >= 1919).all()


def test_synthetic_users_fields(data: MovieLens):
    users = data.users
    assert users.user_id.tolist() == list(range(1, 201))
    assert set(users.gender) == {"M", "F"}
    assert set(users.age.tolist()) <= set(AGE_GROUPS_ML1M)
    assert all(len(z) in (5, 10) for z in users.zip_code)


def test_synthetic_bytes_latin1_lf(synthetic_ml1m: Path):
    movies = (synthetic_ml1m / "movies.dat").read_bytes()
    assert b"\xe9" in movies
    for name in ("ratings.dat", "movies.dat", "users.dat"):
        content = (synthetic_ml1m / name).read_bytes()
        assert b"\r" not in content, name
        assert content.endswith(b"\n"), name


def test_synthetic_same_seed_same_bytes(tmp_path: Path):
    first = write_synthetic_movielens(tmp_path / "a", seed=5, **SMALL)
    second = write_synthetic_movielens(tmp_path / "b", seed=5, **SMALL)
    for name in ("ratings.dat", "movies.dat", "users.dat"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_synthetic_seed_changes_ratings(tmp_path: Path):
    first = write_synthetic_movielens(tmp_path / "a", seed=5, **SMALL)
    second = write_synthetic_movielens(tmp_path / "b", seed=6, **SMALL)
    ratings = "ratings.dat"
    assert (first / ratings).read_bytes() != (second / ratings).read_bytes()


def test_synthetic_every_user_rates_everything(tmp_path: Path):
    folder = write_synthetic_movielens(
        tmp_path, n_users=5, n_movies=12, n_unrated=2, min_ratings=10, mean_ratings=10
    )
    data = load_movielens(folder)
    assert np.bincount(data.ratings.user)[1:].tolist() == [10] * 5


def test_synthetic_leaves_no_temporary_files(tmp_path: Path):
    write_synthetic_movielens(tmp_path, **SMALL)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["movies.dat", "ratings.dat", "users.dat"]


IMPOSSIBLE = [
    {"n_users": 0},
    {"n_movies": 10, "n_unrated": 10},
    {"n_unrated": -1},
    {"min_ratings": 0},
    {"n_movies": 30, "n_unrated": 0, "min_ratings": 31},
    {"min_ratings": 20, "mean_ratings": 19},
    {"n_movies": 50, "n_unrated": 0, "min_ratings": 5, "mean_ratings": 51},
]


@pytest.mark.parametrize("arguments", IMPOSSIBLE)
def test_synthetic_impossible_counts(tmp_path: Path, arguments: dict):
    with pytest.raises(ConfigError):
        write_synthetic_movielens(tmp_path, **arguments)


def test_synthetic_cli_writes_files(tmp_path: Path):
    argv = ["--dest", str(tmp_path / "out"), "--users", "25", "--movies", "40"]
    argv += ["--mean-ratings", "30", "--seed", "1"]
    assert synthetic.main(argv) == 0
    data = load_movielens(tmp_path / "out")
    assert len(data.users) == 25
    assert len(data.ratings) == 25 * 30


def test_synthetic_cli_bad_count(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--dest", str(tmp_path), "--users", "0"])
    assert exit_info.value.code == 2
    assert "n_users must be at least 1" in capsys.readouterr().err
