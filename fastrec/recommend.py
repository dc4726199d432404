"""Top-k next-movie recommendations for one MovieLens user from a checkpoint.

    python -m fastrec.recommend --checkpoint PATH --user RAW_USER_ID [--k 10]
                                [--data-dir DIR] [--history N] [--device auto]

The command reads the user's whole time-ordered history and feeds the last
T = model max_len items to the model. For the ``windows`` split the input is the
last window of ``[start] + movies``, without the end token (see ``input_window``).
Every movie the user has rated, padding and the special tokens are excluded from
the ranking, so the list contains unrated movies only.

Shapes: T positions, V catalog rows (padding, real items, special tokens), S the
user's number of ratings, K the list length.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import DataConfig
from .data.movielens import MovieLens, load_movielens
from .data.prepare import vocabulary_for
from .data.sequences import PAD, Vocabulary, build_user_sequences
from .devices import parse_device
from .errors import ConfigError, DataError, exit_on_user_error
from .kernels import masked_topk
from .model import SequentialRecommender

# ML-1M titles end in the release year, as in "Toy Story (1995)", and the tables
# print the year in a column of its own.
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


@dataclass(frozen=True)
class Movie:
    """A movie's catalog entry as printed: raw id, title without year, genres."""

    movie_id: int
    title: str
    year: int
    """Release year from the title, -1 when the title has none."""
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Rated:
    """One rating of the user's history."""

    movie: Movie
    rating: int
    timestamp: int
    """Unix seconds."""


@dataclass(frozen=True)
class Recommendation:
    """One entry of a top-k list."""

    rank: int
    """1-based position in the list."""
    item: int
    """Dense item id (1..n_items)."""
    movie: Movie
    score: float
    """Model score (logit) of the item. Only the order within a list is meaningful."""


@dataclass(frozen=True)
class UserHistory:
    """A user's dense ids and time-ordered ratings under the run's vocabulary."""

    vocab: Vocabulary
    user: int
    """Dense user id."""
    items: np.ndarray
    """[S] int32 dense item ids, oldest first (ties keep the ratings file order)."""
    ratings: np.ndarray
    """[S] int8."""
    timestamps: np.ndarray
    """[S] int64 Unix seconds."""


def run_data_config(state: dict[str, Any], data_dir: str | None = None) -> DataConfig:
    """Return the checkpoint's data config, with ``data_dir`` as its folder if given."""
    config = DataConfig(**state["config"]["data"])
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    return config


def checked_vocabulary(
    state: dict[str, Any], data: MovieLens, config: DataConfig
) -> Vocabulary:
    """Rebuild the run's dense ids from ``data`` and compare them to the checkpoint's.

    Raises DataError when the movies or users differ from those the model was
    trained on, since the model's rows would then score the wrong movies.
    """
    vocab = vocabulary_for(data, config)
    store = state["store"]
    _compare_ids("movie", vocab.item_raw, store["item_raw"], config)
    _compare_ids("user", vocab.user_raw, store["user_raw"], config)
    return vocab


def _compare_ids(
    kind: str, rebuilt: np.ndarray, trained: list[int], config: DataConfig
) -> None:
    trained_ids = np.asarray(trained, dtype=np.int64)
    rebuilt_ids = rebuilt.astype(np.int64)
    advice = "pass --data-dir with the MovieLens folder the model was trained on"
    if len(rebuilt_ids) != len(trained_ids):
        # Raw ids are >= 1, so padding (0) and special tokens (-1) are not counted.
        rebuilt_count = int(np.count_nonzero(rebuilt_ids > 0))
        trained_count = int(np.count_nonzero(trained_ids > 0))
        raise DataError(
            f"the ratings in {config.data_dir} have {rebuilt_count} distinct "
            f"{kind}s but the checkpoint was trained on {trained_count}. "
            f"To fix, {advice}"
        )
    differ = np.flatnonzero(rebuilt_ids != trained_ids)
    if len(differ):
        index = int(differ[0])
        raise DataError(
            f"the {kind} ids of {config.data_dir} differ from the checkpoint's at "
            f"dense id {index} (raw id {rebuilt_ids[index]} here, "
            f"{trained_ids[index]} in the checkpoint). To fix, {advice}"
        )


def dense_user(vocab: Vocabulary, user_raw_id: int, data_dir: str) -> int:
    """Return the dense id of a raw user id; an id without ratings raises DataError."""
    raw = vocab.user_raw
    index = int(np.searchsorted(raw, user_raw_id))
    if index < len(raw) and int(raw[index]) == user_raw_id:
        return index
    raise DataError(
        f"user {user_raw_id} has no ratings in {data_dir}. Valid user ids run from "
        f"{int(raw[0])} to {int(raw[-1])} ({len(raw)} users with ratings)"
    )


def load_user_history(
    state: dict[str, Any], data: MovieLens, user_raw_id: int
) -> UserHistory:
    """Return the user's time-ordered ratings under the checkpoint's vocabulary."""
    config = run_data_config(state)
    vocab = checked_vocabulary(state, data, config)
    user = dense_user(vocab, user_raw_id, config.data_dir)
    seqs = build_user_sequences(data, vocab)
    lo, hi = int(seqs.offsets[user]), int(seqs.offsets[user + 1])
    return UserHistory(
        vocab=vocab,
        user=user,
        items=seqs.items[lo:hi],
        ratings=seqs.ratings[lo:hi],
        timestamps=seqs.timestamps[lo:hi],
    )


def input_window(
    items: np.ndarray, vocab: Vocabulary, split: str, max_len: int
) -> np.ndarray:
    """Return the model input [T] for predicting the movie after ``items``.

    It contains the last ``max_len`` items, left-padded with 0 as in the window store.
    For the ``windows`` split the sequence is ``[start] + items``, the tokens the
    model was trained on. The end token is not appended: in training it is a target
    that follows the last movie, and here the next movie is what is predicted.
    """
    sequence = np.asarray(items, dtype=np.int64)
    if split == "windows":
        start = vocab.n_items + 1
        sequence = np.concatenate([[start], sequence])
    window = np.full(max_len, PAD, dtype=np.int64)
    tail = sequence[-max_len:]
    window[max_len - len(tail) :] = tail
    return window


def recommend(
    state: dict[str, Any],
    data: MovieLens,
    user_raw_id: int,
    k: int,
    model: SequentialRecommender | None = None,
) -> list[Recommendation]:
    """Rank the movies the user has not rated and return the k best.

    ``data`` is the run's MovieLens data (see ``run_data_config``). ``model`` is
    the checkpoint's model, rebuilt on the CPU when None. The list is shorter than
    k only when fewer unrated movies remain.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"k={k!r} is invalid. Give the list length as an integer >= 1"
        )
    history = load_user_history(state, data, user_raw_id)
    if model is None:
        model = model_from_checkpoint(state)
    scores, top = _score_and_rank(model, history, run_data_config(state).split, k)
    movies = movie_table(data)
    vocab = history.vocab
    return [
        Recommendation(
            rank=rank,
            item=item,
            movie=movies[int(vocab.item_raw[item])],
            score=score,
        )
        for rank, (item, score) in enumerate(zip(top, scores), start=1)
    ]


@torch.no_grad()
def _score_and_rank(
    model: SequentialRecommender, history: UserHistory, split: str, k: int
) -> tuple[list[float], list[int]]:
    """Return the scores and dense ids of the top-k unseen items, best first."""
    device = next(model.parameters()).device
    window = input_window(history.items, history.vocab, split, model.config.max_len)
    items = torch.from_numpy(window)[None, :].to(device)  # [1, T]
    users = torch.tensor([history.user], device=device)  # [1]
    seen = torch.from_numpy(history.items.astype(np.int64))
    seen = seen[None, :].to(device)  # [1, S]
    vocab = history.vocab
    # Padding and the special tokens are never recommended.
    exclude = torch.tensor(
        [PAD, *range(vocab.n_items + 1, vocab.vocab_size)], device=device
    )
    model.eval()
    # fp32 without autocast: bf16 logits would tie far more often.
    scores = model.score_next(items, users).float()  # [1, V]
    values, indices = masked_topk(scores, seen, k, exclude=exclude)  # [1, K] each
    keep = indices[0] >= 1  # -1 marks slots with no eligible item left
    return values[0][keep].tolist(), indices[0][keep].tolist()


def movie_table(data: MovieLens) -> dict[int, Movie]:
    """Return every movie of ``movies.dat`` by raw id, titles without the year."""
    movies = data.movies
    table = {}
    for movie_id, title, genres, year in zip(
        movies.movie_id.tolist(), movies.title, movies.genres, movies.years.tolist()
    ):
        display_title = _YEAR_SUFFIX.sub("", title) if year >= 0 else title
        table[movie_id] = Movie(movie_id, display_title, year, genres)
    return table


def recent_ratings(history: UserHistory, data: MovieLens, n: int) -> list[Rated]:
    """Return the user's ``n`` most recent ratings, newest first."""
    movies = movie_table(data)
    item_raw = history.vocab.item_raw
    start = max(0, len(history.items) - n)
    rated = [
        Rated(
            movie=movies[int(item_raw[item])],
            rating=int(rating),
            timestamp=int(timestamp),
        )
        for item, rating, timestamp in zip(
            history.items[start:], history.ratings[start:], history.timestamps[start:]
        )
    ]
    return rated[::-1]


# Printing ------------------------------------------------------------------------


def _year_text(year: int) -> str:
    return str(year) if year >= 0 else "-"


def _date_text(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def format_history(user_raw_id: int, total: int, rated: list[Rated]) -> str:
    """Return the table of the user's recent ratings."""
    header = f"user {user_raw_id}: {total} ratings"
    if not rated:
        return header
    lines = [f"{header}; the {len(rated)} most recent, newest first"]
    width = max([len(r.movie.title) for r in rated] + [5])
    lines.append(f"{'date (UTC)':<10}  rating  {'title':<{width}}  year  genres")
    for r in rated:
        lines.append(
            f"{_date_text(r.timestamp):<10}  {r.rating:>6}  "
            f"{r.movie.title:<{width}}  {_year_text(r.movie.year):>4}  "
            f"{'|'.join(r.movie.genres)}"
        )
    return "\n".join(lines)


def format_recommendations(recommendations: list[Recommendation], k: int) -> str:
    """Return the table of a top-k list."""
    if not recommendations:
        return f"top {k}: no unrated movie is left to recommend"
    lines = [f"top {k} recommendations among the movies the user has not rated"]
    width = max([len(r.movie.title) for r in recommendations] + [5])
    lines.append(f"rank  {'score':>9}  {'title':<{width}}  year  genres")
    for r in recommendations:
        lines.append(
            f"{r.rank:>4}  {r.score:>9.4f}  {r.movie.title:<{width}}  "
            f"{_year_text(r.movie.year):>4}  {'|'.join(r.movie.genres)}"
        )
    return "\n".join(lines)


# Command line --------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the ``fastrec.recommend`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m fastrec.recommend", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, help="best.pt or last.pt of a run"
    )
    parser.add_argument(
        "--user", required=True, type=int, help="raw MovieLens user id, e.g. 1"
    )
    parser.add_argument(
        "--k", type=_positive_int, default=10, help="number of recommendations"
    )
    parser.add_argument("--data-dir", help="MovieLens folder (default: the run's)")
    parser.add_argument(
        "--history",
        type=_non_negative_int,
        default=10,
        help="number of the user's most recent ratings to print",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[Recommendation]:
    """Run the ``fastrec.recommend`` command line."""
    args = parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    config = run_data_config(state, args.data_dir)
    # The helpers below name the state's data folder in their errors, so the state
    # carries the --data-dir override.
    state = dict(state, config=dict(state["config"], data=dataclasses.asdict(config)))
    data = load_movielens(config.data_dir)
    history = load_user_history(state, data, args.user)

    model = model_from_checkpoint(state, parse_device(args.device, "--device"))
    recommendations = recommend(state, data, args.user, args.k, model=model)

    recent = recent_ratings(history, data, args.history)
    print(format_history(args.user, len(history.items), recent))
    print()
    print(format_recommendations(recommendations, args.k))
    return recommendations


if __name__ == "__main__":
    main()
