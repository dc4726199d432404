"""Tests of fastrec.recommend on small synthetic MovieLens data, all on the CPU."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from fastrec import recommend as rec
from fastrec.checkpoint import load_checkpoint, save_checkpoint
from fastrec.config import Config, DataConfig
from fastrec.data.movielens import MovieLens, load_movielens
from fastrec.data.prepare import prepare
from fastrec.data.sequences import Vocabulary
from fastrec.data.synthetic import write_synthetic_movielens
from fastrec.errors import ConfigError, DataError
from fastrec.model import ModelConfig, SequentialRecommender

N_USERS = 60


def write_data(folder: Path, seed: int) -> Path:
    return write_synthetic_movielens(
        folder,
        n_users=N_USERS,
        n_movies=120,
        n_unrated=5,
        min_ratings=10,
        mean_ratings=25,
        seed=seed,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a module-private synthetic ML-1M folder (60 users, 120 movies)."""
    return write_data(tmp_path_factory.mktemp("recommend") / "ml-1m", seed=5)


def write_checkpoint(data_dir: Path, folder: Path, split: str, head: str) -> Path:
    """Save an untrained model of ``split`` in the format fastrec.train writes."""
    changes = (
        {"max_len": 5, "stride": 1, "min_history": 5} if split == "windows" else {}
    )
    data = DataConfig(
        data_dir=str(data_dir),
        download=False,
        split=split,
        store=str(folder / f"{split}.arrow"),
        **({"max_len": 8, "stride": 4} | changes),
    )
    prepared = prepare(data)
    meta = prepared.store.metadata
    torch.manual_seed(0)
    model = SequentialRecommender(
        ModelConfig(
            vocab_size=meta["vocab_size"],
            n_users=meta["n_users"],
            max_len=meta["max_len"],
            n_special=meta["n_special"],
            head=head,
            d_model=16,
            n_layers=1,
            n_heads=2,
            d_ff=32,
        )
    )
    state = {
        "model": model.state_dict(),
        "model_config": dataclasses.asdict(model.config),
        "config": Config(data=data).to_dict(),
        "store": dict(meta),
    }
    path = folder / f"{split}.pt"
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def loo_checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(data_dir, tmp_path_factory.mktemp("loo"), "loo", "dot")


@pytest.fixture(scope="module")
def windows_checkpoint(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("windows")
    return write_checkpoint(data_dir, folder, "windows", "interaction")


@pytest.fixture(scope="module")
def movielens(data_dir: Path) -> MovieLens:
    return load_movielens(data_dir)


# Independent reading of the raw files ------------------------------------------


def raw_titles(data_dir: Path) -> dict[int, str]:
    """Return each raw movie id's title as movies.dat spells it, in Latin-1."""
    text = (data_dir / "movies.dat").read_bytes().decode("latin-1")
    titles = {}
    for line in text.split("\n"):
        if line:
            movie_id, title, _genres = line.split("::")
            titles[int(movie_id)] = title
    return titles


def raw_timelines(data_dir: Path) -> dict[int, list[int]]:
    """Return each raw user's raw movie ids in time order, ties in file order."""
    events: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line in (data_dir / "ratings.dat").read_text(encoding="latin-1").split("\n"):
        if line:
            user, movie, _rating, timestamp = (int(f) for f in line.split("::"))
            events[user].append((timestamp, movie))
    return {
        user: [movie for _, movie in sorted(pairs, key=lambda pair: pair[0])]
        for user, pairs in events.items()
    }


def without_year(title: str) -> str:
    return title.rsplit(" (", 1)[0]


# input_window ----------------------------------------------------------------------

# Three real items (dense 1..3), then start (4) and end (5).
VOCAB = Vocabulary(
    item_raw=np.array([0, 10, 20, 30, -1, -1]),
    user_raw=np.array([1]),
    n_items=3,
    n_special=2,
)


def test_input_window_loo_left_pads():
    window = rec.input_window(np.array([2, 3]), VOCAB, "loo", 4)
    assert window.tolist() == [0, 0, 2, 3]


def test_input_window_loo_keeps_last_items():
    window = rec.input_window(np.array([1, 2, 3, 1, 2]), VOCAB, "loo", 3)
    assert window.tolist() == [3, 1, 2]


def test_input_window_windows_prepends_start():
    window = rec.input_window(np.array([2, 3]), VOCAB, "windows", 5)
    assert window.tolist() == [0, 0, 4, 2, 3]


def test_input_window_windows_long_history():
    window = rec.input_window(np.array([1, 2, 3, 1]), VOCAB, "windows", 3)
    assert window.tolist() == [2, 3, 1]


# recommend ---------------------------------------------------------------------------


def test_recommend_excludes_rated_movies(loo_checkpoint, movielens, data_dir):
    state = load_checkpoint(loo_checkpoint)
    timelines = raw_timelines(data_dir)
    for user in (1, 17, N_USERS):
        recommendations = rec.recommend(state, movielens, user, 20)
        movies = {r.movie.movie_id for r in recommendations}
        assert len(recommendations) == 20, user
        assert not movies & set(timelines[user]), user


def test_recommend_ranks_and_scores_ordered(loo_checkpoint, movielens):
    recommendations = rec.recommend(load_checkpoint(loo_checkpoint), movielens, 3, 15)
    scores = [r.score for r in recommendations]
    assert [r.rank for r in recommendations] == list(range(1, 16))
    assert scores == sorted(scores, reverse=True)


def test_recommend_top_item_is_best_unrated(loo_checkpoint, movielens, data_dir):
    state = load_checkpoint(loo_checkpoint)
    model = rec.model_from_checkpoint(state)
    history = rec.load_user_history(state, movielens, 4)
    window = rec.input_window(history.items, history.vocab, "loo", 8)
    with torch.no_grad():
        scores = model.score_next(
            torch.from_numpy(window)[None], torch.tensor([history.user])
        )
    scores = scores[0].numpy().copy()
    scores[history.items] = -np.inf
    best = int(np.argmax(scores))
    top = rec.recommend(state, movielens, 4, 1, model=model)
    assert top[0].item == best


def test_recommend_windows_never_tokens(windows_checkpoint, movielens):
    state = load_checkpoint(windows_checkpoint)
    n_items = len(np.unique(movielens.ratings.item))
    recommendations = rec.recommend(state, movielens, 2, 50)
    items = [r.item for r in recommendations]
    assert len(items) == 50
    assert min(items) >= 1
    assert max(items) <= n_items


def test_recommend_k_beyond_unrated_shortens(loo_checkpoint, movielens, data_dir):
    state = load_checkpoint(loo_checkpoint)
    timelines = raw_timelines(data_dir)
    unrated = len({m for ms in timelines.values() for m in ms} - set(timelines[5]))
    recommendations = rec.recommend(state, movielens, 5, 10_000)
    assert len(recommendations) == unrated


def test_recommend_zero_k_raises(loo_checkpoint, movielens):
    with pytest.raises(ConfigError, match="k=0"):
        rec.recommend(load_checkpoint(loo_checkpoint), movielens, 1, 0)


def test_recommend_unknown_user_raises(loo_checkpoint, movielens):
    with pytest.raises(DataError, match="user 999999 has no ratings"):
        rec.recommend(load_checkpoint(loo_checkpoint), movielens, 999999, 10)


def test_recommend_other_data_raises(loo_checkpoint, tmp_path):
    other = load_movielens(write_data(tmp_path / "other", seed=6))
    with pytest.raises(DataError, match="differ|distinct"):
        rec.recommend(load_checkpoint(loo_checkpoint), other, 1, 10)


# Command line --------------------------------------------------------------------


def user_with_latin1_title(data_dir: Path) -> tuple[int, str]:
    """Return a user and the title (without year) of a rated movie with "é"."""
    titles = raw_titles(data_dir)
    for user, movies in sorted(raw_timelines(data_dir).items()):
        for movie in movies:
            if "é" in titles[movie]:
                return user, without_year(titles[movie])
    raise AssertionError("the synthetic data has no rated Latin-1 title")


def test_main_prints_latin1_history_title(loo_checkpoint, data_dir, capsys):
    user, title = user_with_latin1_title(data_dir)
    rec.main(
        ["--checkpoint", str(loo_checkpoint), "--user", str(user)]
        + ["--history", "1000"]
    )
    out = capsys.readouterr().out
    assert title in out
    assert "Ã" not in out


def test_main_history_newest_first(loo_checkpoint, data_dir, capsys):
    titles = raw_titles(data_dir)
    movies = raw_timelines(data_dir)[7]
    rec.main(["--checkpoint", str(loo_checkpoint), "--user", "7", "--history", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"user 7: {len(movies)} ratings")
    for line, movie in zip(lines[2:5], reversed(movies[-3:])):
        assert without_year(titles[movie]) in line


def test_main_prints_k_recommendations(loo_checkpoint, capsys):
    rec.main(["--checkpoint", str(loo_checkpoint), "--user", "7", "--k", "4"])
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("top 4 recommendations among the movies the user has not rated")
    ranks = [line.split()[0] for line in lines[start + 2 :]]
    assert ranks == ["1", "2", "3", "4"]


def test_main_unknown_user_exits_2(loo_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rec.main(["--checkpoint", str(loo_checkpoint), "--user", "999999"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "999999" in lines[0]
    assert f"from 1 to {N_USERS}" in lines[0]


def test_main_non_integer_user_exits_2(loo_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rec.main(["--checkpoint", str(loo_checkpoint), "--user", "abc"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'abc'" in capsys.readouterr().err


def test_main_other_data_dir_exits_2(loo_checkpoint, tmp_path, capsys):
    other = write_data(tmp_path / "other", seed=6)
    argv = [
        "--checkpoint",
        str(loo_checkpoint),
        "--user",
        "1",
        "--data-dir",
        str(other),
    ]
    with pytest.raises(SystemExit) as exit_info:
        rec.main(argv)
    assert exit_info.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
