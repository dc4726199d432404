"""Tests of fastrec.evaluate on small synthetic MovieLens data, all on the CPU."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fastrec.kernels import masked_topk, masked_topk_scores

from fastrec import evaluate, train
from fastrec.config import DataConfig, EvalConfig
from fastrec.data.prepare import PreparedData, prepare
from fastrec.data.synthetic import write_synthetic_movielens
from fastrec.evaluate import Evaluator
from fastrec.model import ModelConfig, SequentialRecommender

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
N_USERS = 80
BASELINES = ("most_popular", "top_rated", "recent_popular")
EVAL = EvalConfig(ks=[10, 50], batch_size=32, backend="torch")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a module-private synthetic ML-1M folder (80 users, 150 movies)."""
    return write_synthetic_movielens(
        tmp_path_factory.mktemp("evaluate") / "ml-1m",
        n_users=N_USERS,
        n_movies=150,
        n_unrated=5,
        min_ratings=10,
        mean_ratings=30,
        seed=3,
    )


def prepared_split(data_dir: Path, store: Path, **changes) -> PreparedData:
    config = DataConfig(
        data_dir=str(data_dir), download=False, store=str(store), **changes
    )
    return prepare(config)


@pytest.fixture(scope="module")
def loo(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    store = tmp_path_factory.mktemp("stores") / "loo.arrow"
    return prepared_split(data_dir, store, max_len=20, stride=10)


@pytest.fixture(scope="module")
def windows(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    store = tmp_path_factory.mktemp("stores") / "windows.arrow"
    return prepared_split(
        data_dir,
        store,
        split="windows",
        max_len=5,
        stride=1,
        min_history=5,
        holdout_fraction=0.2,
    )


def random_model(prepared: PreparedData, head: str) -> SequentialRecommender:
    """Return an untrained model sized for ``prepared``, in eval mode."""
    meta = prepared.store.metadata
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=meta["vocab_size"],
        n_users=meta["n_users"],
        max_len=meta["max_len"],
        n_special=meta["n_special"],
        head=head,
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        dropout=0.0,
    )
    return SequentialRecommender(config).eval()


def cpu_evaluator(prepared: PreparedData) -> Evaluator:
    return Evaluator(prepared, EVAL, torch.device("cpu"), prefetch=0)


# Independent reference: plain Python over the raw ratings file ------------------


def raw_timelines(data_dir: Path) -> dict[int, list[int]]:
    """Return each raw user's raw movie ids in time order, ties in file order."""
    events: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line in (data_dir / "ratings.dat").read_text(encoding="latin-1").split("\n"):
        if not line:
            continue
        user, movie, _rating, timestamp = (int(field) for field in line.split("::"))
        events[user].append((timestamp, movie))
    # sorted() is stable, so ratings of one second keep their file order.
    return {
        user: [movie for _, movie in sorted(pairs, key=lambda pair: pair[0])]
        for user, pairs in sorted(events.items())
    }


def reference_most_popular(data_dir: Path, k: int) -> tuple[float, float, int]:
    """Return (HR@k, NDCG@k, users) of most-popular on the loo test rows.

    Popularity counts every rating except each evaluated user's last two. A user
    is evaluated with at least 3 ratings (1 training item plus the two held out).
    Every movie rated by anyone is a candidate, ties go to the lower raw id, and
    the user's movies before the test movie are excluded.
    """
    timelines = raw_timelines(data_dir)
    catalog = sorted({movie for movies in timelines.values() for movie in movies})
    counts: Counter[int] = Counter()
    for movies in timelines.values():
        counts.update(movies[:-2] if len(movies) >= 3 else movies)
    order = sorted(catalog, key=lambda movie: (-counts[movie], movie))
    hits, gains, users = 0, 0.0, 0
    for movies in timelines.values():
        if len(movies) < 3:
            continue
        users += 1
        seen = set(movies[:-1])
        top = [movie for movie in order if movie not in seen][:k]
        if movies[-1] in top:
            hits += 1
            gains += 1.0 / math.log2(top.index(movies[-1]) + 2)
    return hits / users, gains / users, users


# Evaluator ------------------------------------------------------------------------


def test_evaluator_ranks_every_test_row(loo):
    results = cpu_evaluator(loo).evaluate_model(random_model(loo, "dot"), "test")
    assert results["users"] == len(loo.store.part("test"))
    assert results["users"] == N_USERS


def test_evaluate_all_counts_users(loo):
    results = cpu_evaluator(loo).evaluate_all(random_model(loo, "dot"), "test")
    assert results["users"] == N_USERS
    for name in BASELINES:
        assert results[name]["users"] == N_USERS
    assert results["skipped_rows"] == 0


def test_most_popular_hr_matches_reference(loo, data_dir):
    expected_hr, _, users = reference_most_popular(data_dir, k=10)
    results = cpu_evaluator(loo).evaluate_baselines("test", ks=[10])
    assert results["most_popular"]["users"] == users
    assert expected_hr > 0
    assert results["most_popular"]["HR@10"] == pytest.approx(expected_hr, abs=1e-12)


def test_most_popular_ndcg_matches_reference(loo, data_dir):
    _, expected_ndcg, _ = reference_most_popular(data_dir, k=10)
    results = cpu_evaluator(loo).evaluate_baselines("test", ks=[10])
    assert results["most_popular"]["NDCG@10"] == pytest.approx(expected_ndcg, abs=1e-9)


class TopkSpy:
    """Record the (seen, top) of every top-K call that fastrec.evaluate makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.scores_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fused_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        monkeypatch.setattr(evaluate, "masked_topk", self.masked_topk)
        monkeypatch.setattr(evaluate, "masked_topk_scores", self.masked_topk_scores)

    def masked_topk(self, scores, seen, k, exclude=None, backend="auto"):
        values, top = masked_topk(scores, seen, k, exclude=exclude, backend=backend)
        self.scores_calls.append((seen.clone(), top.clone()))
        return values, top

    def masked_topk_scores(
        self, hidden, weights, seen, k, exclude=None, backend="auto"
    ):
        values, top = masked_topk_scores(
            hidden, weights, seen, k, exclude=exclude, backend=backend
        )
        self.fused_calls.append((seen.clone(), top.clone()))
        return values, top


def overlap_count(seen: torch.Tensor, top: torch.Tensor) -> int:
    """Count list slots [B, K] that hold one of the row's seen items [B, S]."""
    same = top[:, :, None] == seen[:, None, :]  # [B, K, S]
    return int((same & (seen[:, None, :] >= 0)).sum())


def test_loo_lists_skip_raw_history(loo, data_dir, monkeypatch):
    spy = TopkSpy(monkeypatch)
    cpu_evaluator(loo).evaluate_all(random_model(loo, "dot"), "test")
    model_top = torch.cat([top for _, top in spy.fused_calls])
    # The baselines rank each batch in the order most_popular, top_rated,
    # recent_popular.
    baseline_tops = {
        name: torch.cat([top for _, top in spy.scores_calls[index :: len(BASELINES)]])
        for index, name in enumerate(BASELINES)
    }
    timelines = raw_timelines(data_dir)
    catalog = np.array(sorted({m for movies in timelines.values() for m in movies}))
    # Test rows are in dense user order, which is the order of the raw user ids.
    histories = [set(movies[:-1]) for movies in timelines.values()]
    for name, top in {"model": model_top, **baseline_tops}.items():
        assert top.shape == (N_USERS, max(EVAL.ks)), name
        assert int((top == 0).sum()) == 0, name
        assert int((top > len(catalog)).sum()) == 0, name
        for row, history in enumerate(histories):
            items = top[row][top[row] >= 1].numpy()
            raw = set(catalog[items - 1].tolist())
            assert not raw & history, (name, row)


def test_windows_lists_skip_seen_and_tokens(windows, monkeypatch):
    spy = TopkSpy(monkeypatch)
    model = random_model(windows, "interaction")
    cpu_evaluator(windows).evaluate_all(model, "test")
    n_items = windows.vocab.n_items
    assert len(spy.scores_calls) > 0
    for seen, top in spy.scores_calls:
        assert overlap_count(seen, top) == 0
        assert int((top == 0).sum()) == 0
        assert int((top > n_items).sum()) == 0


def test_windows_skips_end_token_rows(windows):
    test = windows.store.part("test")
    end = windows.vocab.n_items + 2
    ending = int(np.count_nonzero(np.asarray(test.target) == end))
    results = cpu_evaluator(windows).evaluate_all(
        random_model(windows, "interaction"), "test"
    )
    assert ending > 0
    assert results["skipped_rows"] == ending
    assert results["users"] == len(test) - ending
    assert results["most_popular"]["users"] == len(test) - ending


def test_windows_rows_exclude_end_targets(windows):
    evaluator = cpu_evaluator(windows)
    rows = evaluator.rows("test")
    targets = np.asarray(windows.store.part("test").target)[rows]
    assert int(targets.max()) <= windows.vocab.n_items


# Command line --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the tiny config for a few steps and return its out-dir."""
    out_dir = tmp_path_factory.mktemp("run")
    train.main(
        [
            "--config",
            str(TINY_CONFIG),
            "--data-dir",
            str(data_dir),
            "--out-dir",
            str(out_dir),
            "--set",
            "train.epochs=1",
            "--set",
            "train.max_steps_per_epoch=3",
            "--set",
            "train.device=cpu",
        ]
    )
    return out_dir


def test_main_writes_json_and_chart(trained_run, capsys):
    capsys.readouterr()
    checkpoint = trained_run / "best.pt"
    evaluate.main(["--checkpoint", str(checkpoint), "--device", "cpu"])
    results = json.loads((trained_run / "eval_test.json").read_text())
    for key in ("model", *BASELINES, "users"):
        assert key in results, key
    for name in ("model", *BASELINES):
        for metric in ("HR@10", "NDCG@10", "MRR@10", "HR@50"):
            assert metric in results[name], (name, metric)
    assert results["users"] == N_USERS
    chart = trained_run / "eval_test.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_table_lists_baselines(trained_run, capsys):
    capsys.readouterr()
    json_path = trained_run / "table.json"
    evaluate.main(
        ["--checkpoint", str(trained_run / "best.pt"), "--json", str(json_path)]
        + ["--device", "cpu"]
    )
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "model", *BASELINES]
    assert any(line.split()[0] == "HR@10" for line in lines[2:])
    assert json_path.with_suffix(".png").exists()


def test_main_missing_checkpoint_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--checkpoint", str(missing)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0]


def test_main_corrupt_checkpoint_exits_2(tmp_path, capsys):
    corrupt = tmp_path / "best.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--checkpoint", str(corrupt)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(corrupt) in lines[0]
