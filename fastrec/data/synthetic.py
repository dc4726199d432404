"""Write synthetic MovieLens-1M files for tests and benchmarks.

The files have ML-1M's exact format (``::`` separators, ISO-8859-1, LF line
endings) and its main statistical traits:

- movie popularity follows a Zipf-like law, and some movies are never rated;
- each user has a taste over the 18 genres, which drives both what they rate and
  how they rate it (1 to 5 stars);
- every user has at least ``min_ratings`` ratings, and the ratings of one user come
  in bursts that share a timestamp, so about half of all ratings repeat the
  timestamp of an earlier rating by the same user;
- within a user the file order is not the time order, as in ML-1M;
- some titles contain ":" or Latin-1 letters such as "é", and movie ids have gaps.

Usage: ``python -m fastrec.data.synthetic --dest DIR [--users N] [--movies N]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastrec.data.movielens import AGE_GROUPS_ML1M, ENCODING, GENRES_ML1M
from fastrec.errors import ConfigError, exit_on_user_error

__all__ = ["main", "write_synthetic_movielens"]

log = logging.getLogger(__name__)

# Timestamp range of ML-1M, in seconds since the Unix epoch.
FIRST_TIMESTAMP = 956_703_932
LAST_TIMESTAMP = 1_046_454_590

# Number of ML-1M movies that list each genre, in GENRES_ML1M order. Used as
# weights when genres are drawn.
_GENRE_COUNTS_ML1M = np.array(
    [503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492]
    + [143, 68],
    dtype=np.float64,
)
# Number of ML-1M users in each age group, in AGE_GROUPS_ML1M order.
_AGE_GROUP_COUNTS_ML1M = np.array([222, 1103, 2096, 1193, 550, 496, 380], np.float64)

# Probability that a rating starts a new burst instead of sharing the timestamp of
# the previous rating of the same user. Burst sizes are then geometric with mean
# 1 / 0.47 = 2.1, and 53% of ratings repeat an earlier timestamp of their user,
# both as in ML-1M.
_NEW_BURST_PROBABILITY = 0.47
# Largest number of (user, movie) weights computed at once, which bounds memory.
_CHUNK_ELEMENTS = 1 << 22


def write_synthetic_movielens(
    dest: str | os.PathLike[str],
    n_users: int = 200,
    n_movies: int = 300,
    n_unrated: int = 10,
    min_ratings: int = 20,
    mean_ratings: float = 60,
    seed: int = 0,
) -> Path:
    """Write synthetic ratings.dat, movies.dat and users.dat into ``dest``.

    The files hold ``n_users`` users with ids 1 to n_users, ``n_movies`` movies of
    which at least ``n_unrated`` are never rated, and round(n_users * mean_ratings)
    ratings with at least ``min_ratings`` per user and no repeated (user, movie)
    pair. The same arguments give the same bytes. Each file is written to a
    temporary name and then renamed. Return ``dest``. Raise ConfigError when the
    counts are impossible.
    """
    _check_arguments(n_users, n_movies, n_unrated, min_ratings, mean_ratings)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    movie_ids, genre_matrix = _draw_movies(rng, n_movies)
    rated = np.ones(n_movies, dtype=bool)
    rated[rng.choice(n_movies, size=n_unrated, replace=False)] = False
    popularity = _draw_popularity(rng, n_movies) * rated
    taste = rng.dirichlet(np.full(len(GENRES_ML1M), 0.3), size=n_users)  # (U, 18)
    counts = _draw_rating_counts(
        rng, n_users, int(rated.sum()), min_ratings, mean_ratings
    )

    user_index, movie_index, affinity = _draw_rated_movies(
        rng, counts, popularity, taste, genre_matrix
    )
    stars = _draw_stars(rng, user_index, movie_index, affinity, popularity, n_users)
    # Timestamps increase in the order of the rows, which a within-user shuffle
    # first makes random. A second shuffle makes the file order differ from the
    # time order.
    time_order = _shuffle_within_users(rng, user_index)
    movie_index, stars = movie_index[time_order], stars[time_order]
    timestamps = _draw_timestamps(rng, counts)
    order = _shuffle_within_users(rng, user_index)
    lines = map(
        "{}::{}::{}::{}".format,
        (user_index[order] + 1).tolist(),
        movie_ids[movie_index[order]].tolist(),
        stars[order].tolist(),
        timestamps[order].tolist(),
    )
    _write_atomic(dest / "ratings.dat", "\n".join(lines) + "\n")
    _write_atomic(dest / "movies.dat", _movies_text(rng, movie_ids, genre_matrix))
    _write_atomic(dest / "users.dat", _users_text(rng, n_users))
    log.info(
        "wrote %d ratings by %d users of %d movies to %s",
        len(user_index),
        n_users,
        len(np.unique(movie_index)),
        dest,
    )
    return dest


def _shuffle_within_users(
    rng: np.random.Generator, user_index: np.ndarray
) -> np.ndarray:
    """Return a permutation that shuffles rows within each user's block of rows.

    ``user_index`` must be sorted. Adding a random fraction keeps each block in
    place and orders the rows inside it at random.
    """
    return np.argsort(user_index + rng.random(len(user_index)))


def _check_arguments(
    n_users: int, n_movies: int, n_unrated: int, min_ratings: int, mean_ratings: float
) -> None:
    if n_users < 1:
        raise ConfigError(f"n_users must be at least 1, not {n_users}")
    if not 0 <= n_unrated < n_movies:
        raise ConfigError(
            f"n_unrated must be from 0 to n_movies - 1 = {n_movies - 1}, "
            f"not {n_unrated}"
        )
    n_rateable = n_movies - n_unrated
    if not 1 <= min_ratings <= n_rateable:
        raise ConfigError(
            f"min_ratings must be from 1 to n_movies - n_unrated = {n_rateable}, "
            f"not {min_ratings}"
        )
    if not min_ratings <= mean_ratings <= n_rateable:
        raise ConfigError(
            f"mean_ratings must be from min_ratings = {min_ratings} to "
            f"n_movies - n_unrated = {n_rateable}, not {mean_ratings}"
        )


# ---------------------------------------------------------------------------
# Movies and users


def _draw_movies(
    rng: np.random.Generator, n_movies: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw sorted movie ids with gaps and a (M, 18) 0/1 genre matrix."""
    # ML-1M has 3,883 movies with ids up to 3,952, so about 2% of ids are unused.
    id_range = n_movies + n_movies // 50
    movie_ids = np.sort(rng.choice(id_range, size=n_movies, replace=False) + 1)
    n_genres = len(GENRES_ML1M)
    genre_counts = rng.choice([1, 2, 3], size=n_movies, p=[0.5, 0.35, 0.15])
    # Weighted draws without replacement: the smallest exponential keys divided by
    # the weights win.
    keys = rng.standard_exponential((n_movies, n_genres)) / _GENRE_COUNTS_ML1M
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)  # (M, 18)
    genre_matrix = (ranks < genre_counts[:, None]).astype(np.float32)
    return movie_ids.astype(np.int32), genre_matrix


def _draw_popularity(rng: np.random.Generator, n_movies: int) -> np.ndarray:
    """Return Zipf-like weights 1 / (rank + offset)**1.2 in a random movie order."""
    offset = 1 + n_movies / 100
    weights = (np.arange(n_movies) + offset) ** -1.2
    return rng.permutation(weights)


def _title(index: int, year: int) -> str:
    # A few patterns put ":" and Latin-1 letters into titles. Patterns repeat with
    # the index, so every file of 7 or more movies contains each kind.
    kind = index % 7
    if kind == 1:
        return f"Café Society {index} ({year})"
    if kind == 3:
        return f"Sequel {index}: The Return ({year})"
    if kind == 5:
        return f"Story of Number {index}, The ({year})"
    if index % 11 == 6:
        return f"Über den Wolken {index} (Ñandú: Teil {index % 4}) ({year})"
    return f"Synthetic Movie {index} ({year})"


def _movies_text(
    rng: np.random.Generator, movie_ids: np.ndarray, genre_matrix: np.ndarray
) -> str:
    # Release years lean towards the late 1990s, as in ML-1M.
    years = np.clip(2000 - rng.geometric(0.12, size=len(movie_ids)) + 1, 1919, 2000)
    lines = []
    for index, (movie_id, year, flags) in enumerate(
        zip(movie_ids.tolist(), years.tolist(), genre_matrix)
    ):
        genres = "|".join(GENRES_ML1M[g] for g in np.flatnonzero(flags))
        lines.append(f"{movie_id}::{_title(index, year)}::{genres}\n")
    return "".join(lines)


def _users_text(rng: np.random.Generator, n_users: int) -> str:
    genders = np.where(rng.random(n_users) < 0.72, "M", "F")
    age_weights = _AGE_GROUP_COUNTS_ML1M / _AGE_GROUP_COUNTS_ML1M.sum()
    ages = rng.choice(AGE_GROUPS_ML1M, size=n_users, p=age_weights)
    occupations = rng.integers(0, 21, size=n_users)
    zips = rng.integers(0, 100_000, size=n_users)
    # About 1% of ML-1M zip codes have the ZIP+4 form "55117-1234".
    plus_four = rng.integers(0, 10_000, size=n_users)
    long_form = rng.random(n_users) < 0.01
    lines = []
    for user in range(n_users):
        zip_code = f"{zips[user]:05d}"
        if long_form[user]:
            zip_code += f"-{plus_four[user]:04d}"
        row = (user + 1, genders[user], ages[user], occupations[user], zip_code)
        lines.append("::".join(map(str, row)) + "\n")
    return "".join(lines)


# ---------------------------------------------------------------------------
# Ratings


def _draw_rating_counts(
    rng: np.random.Generator,
    n_users: int,
    n_rateable: int,
    min_ratings: int,
    mean_ratings: float,
) -> np.ndarray:
    """Draw per-user rating counts that sum to round(n_users * mean_ratings).

    Counts have a long right tail and lie between min_ratings and a cap of 70% of
    the rateable movies (at least 2 * mean_ratings, at most n_rateable).
    """
    total = round(n_users * mean_ratings)
    extra_total = total - n_users * min_ratings
    activity = rng.lognormal(0.0, 1.15, size=n_users)
    extra = rng.multinomial(extra_total, activity / activity.sum())
    # The most active ML-1M user rated 62% of the rated movies. A cap of 70% (but
    # at least twice the mean) keeps the tail in that range and the total feasible.
    cap = min(n_rateable, max(math.ceil(0.7 * n_rateable), math.ceil(2 * mean_ratings)))
    room = cap - min_ratings
    # Users drawn above the cap hand their surplus to the others, in proportion to
    # activity. Each round fills or caps some users, so few rounds are needed.
    for _ in range(100):
        surplus = int(np.maximum(extra - room, 0).sum())
        if surplus == 0:
            break
        extra = np.minimum(extra, room)
        open_weights = activity * (extra < room)
        extra += rng.multinomial(surplus, open_weights / open_weights.sum())
    else:
        raise AssertionError("rating counts did not converge")
    return (min_ratings + extra).astype(np.int64)


def _draw_rated_movies(
    rng: np.random.Generator,
    counts: np.ndarray,
    popularity: np.ndarray,
    taste: np.ndarray,
    genre_matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each user's movies without replacement, weighted by popularity and taste.

    Return the user index, the movie index and the user's affinity for the movie
    (mean taste over its genres, times 18 so that 1 means indifferent), one entry
    per rating and grouped by user.
    """
    n_users, n_movies = len(counts), len(popularity)
    # float32 halves the time of the (C, M) steps below.
    genre_share = genre_matrix / genre_matrix.sum(axis=1, keepdims=True)  # (M, 18)
    genre_share_t = np.ascontiguousarray(genre_share.T, dtype=np.float32)  # (18, M)
    taste = taste.astype(np.float32)
    popularity = popularity.astype(np.float32)
    chunk = max(1, _CHUNK_ELEMENTS // n_movies)
    user_parts, movie_parts, affinity_parts = [], [], []
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        affinity = taste[start:stop] @ genre_share_t  # (C, M)
        affinity *= len(GENRES_ML1M)
        # weight = popularity * affinity**1.5. The 1e-3 keeps every rateable
        # movie's weight above zero.
        shifted = affinity + np.float32(1e-3)
        weights = popularity * shifted * np.sqrt(shifted)
        keys = rng.standard_exponential(weights.shape, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Zero weight (an unrated movie) gives an infinite key, never chosen.
            keys /= weights
        for row in range(stop - start):
            count = int(counts[start + row])
            chosen = np.argpartition(keys[row], count - 1)[:count]
            user_parts.append(np.full(count, start + row, dtype=np.int64))
            movie_parts.append(chosen)
            affinity_parts.append(affinity[row, chosen])
    return (
        np.concatenate(user_parts),
        np.concatenate(movie_parts),
        np.concatenate(affinity_parts),
    )


def _draw_stars(
    rng: np.random.Generator,
    user_index: np.ndarray,
    movie_index: np.ndarray,
    affinity: np.ndarray,
    popularity: np.ndarray,
    n_users: int,
) -> np.ndarray:
    """Draw 1-5 star ratings from movie quality, user bias and taste."""
    n_movies = len(popularity)
    # Popular movies are rated a little higher, as in ML-1M.
    log_popularity = np.log(np.where(popularity > 0, popularity, 1.0))
    spread = log_popularity.std() or 1.0
    quality = rng.normal(0.0, 0.45, n_movies)
    quality += 0.25 * (log_popularity - log_popularity.mean()) / spread
    user_bias = rng.normal(0.0, 0.4, n_users)
    liking = np.tanh(np.log(affinity + 1e-3))  # 0 for an indifferent user
    score = 3.3 + quality[movie_index] + user_bias[user_index] + 0.6 * liking
    score += rng.normal(0.0, 0.9, len(score))
    return np.clip(np.rint(score), 1, 5).astype(np.int8)


def _draw_timestamps(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Draw increasing timestamps per user, with bursts that share one second.

    Gaps between bursts are mostly tens of seconds (median about 30 s, as in
    ML-1M). Some users also take breaks of days between rating sessions.
    """
    n_ratings = int(counts.sum())
    n_users = len(counts)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    user_index = np.repeat(np.arange(n_users), counts)
    new_burst = rng.random(n_ratings) < _NEW_BURST_PROBABILITY
    # 60% of users rate in one session. The others break a session after a burst
    # with probability ~ Exponential(mean 0.05).
    break_probability = np.where(
        rng.random(n_users) < 0.6, 0.0, 0.05 * rng.standard_exponential(n_users)
    )
    session_break = rng.random(n_ratings) < break_probability[user_index]
    gaps = np.where(
        session_break,
        rng.lognormal(np.log(5 * 86_400.0), 1.5, n_ratings),
        1 + rng.lognormal(np.log(30.0), 0.9, n_ratings),
    )
    gaps[~new_burst] = 0.0
    gaps[firsts] = 0.0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[firsts], counts)  # now 0 at each user's first rating
    spans = offsets[firsts + counts - 1]
    window = LAST_TIMESTAMP - FIRST_TIMESTAMP
    # Squeeze users whose span exceeds the ML-1M time range.
    squeeze = np.minimum(1.0, window / np.maximum(spans, 1.0))
    offsets = np.floor(offsets * squeeze[user_index]).astype(np.int64)
    spans = offsets[firsts + counts - 1]
    starts = FIRST_TIMESTAMP + np.floor(rng.random(n_users) * (window - spans + 1))
    return starts.astype(np.int64)[user_index] + offsets


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding=ENCODING, newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastrec.data.synthetic",
        description="Write synthetic MovieLens-1M files (ratings.dat, movies.dat, "
        "users.dat).",
    )
    parser.add_argument("--dest", type=Path, required=True, help="output folder")
    parser.add_argument("--users", type=int, default=200, help="number of users")
    parser.add_argument("--movies", type=int, default=300, help="number of movies")
    parser.add_argument(
        "--unrated", type=int, default=10, help="number of movies left unrated"
    )
    parser.add_argument(
        "--min-ratings", type=int, default=20, help="minimum ratings per user"
    )
    parser.add_argument(
        "--mean-ratings", type=float, default=60, help="mean ratings per user"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line tool and return its exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_synthetic_movielens(
        args.dest,
        n_users=args.users,
        n_movies=args.movies,
        n_unrated=args.unrated,
        min_ratings=args.min_ratings,
        mean_ratings=args.mean_ratings,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
