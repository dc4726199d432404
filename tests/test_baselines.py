from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastrec.baselines import (
    BASELINES,
    SECONDS_PER_DAY,
    baseline_scores,
    most_popular_scores,
    recent_popular_scores,
    top_rated_scores,
)
from fastrec.errors import ConfigError, DataError

# Rows: 0 padding, 1..4 real items, 5 a special token.
N_ROWS = 6
N_ITEMS = 4

# Item 1: 4 ratings, mean 3. Item 2: 4 ratings, mean 4. Item 3: 1 rating of 5.
# Item 4: 3 ratings, mean 2.
ITEMS = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4])
RATINGS = torch.tensor([3, 3, 2, 4, 4, 4, 5, 3, 5, 2, 2, 2], dtype=torch.float32)


def order_of(scores: torch.Tensor) -> list[int]:
    """Return the real items from best to worst, ties broken by the lower id."""
    real = list(range(1, N_ITEMS + 1))
    return sorted(real, key=lambda item: (-float(scores[item]), item))


# most_popular


def test_most_popular_counts():
    scores = most_popular_scores(ITEMS, N_ROWS, n_items=N_ITEMS)
    assert scores[1 : N_ITEMS + 1].tolist() == [4.0, 4.0, 1.0, 3.0]


def test_most_popular_padding_and_special_rows_inf():
    scores = most_popular_scores(ITEMS, N_ROWS, n_items=N_ITEMS)
    assert scores[0].item() == -math.inf
    assert scores[5].item() == -math.inf


def test_most_popular_unseen_item_zero():
    scores = most_popular_scores(torch.tensor([1, 1]), 4)
    assert scores.tolist() == [-math.inf, 2.0, 0.0, 0.0]


def test_most_popular_accepts_numpy():
    scores = most_popular_scores(np.array([2, 2, 1], dtype=np.int32), 3)
    assert scores.tolist() == [-math.inf, 1.0, 2.0]
    assert scores.dtype == torch.float32


def test_most_popular_padding_item_raises():
    with pytest.raises(DataError, match="0 is padding"):
        most_popular_scores(torch.tensor([0, 1]), N_ROWS)


def test_most_popular_special_row_item_raises():
    with pytest.raises(DataError, match="1..4"):
        most_popular_scores(torch.tensor([5]), N_ROWS, n_items=N_ITEMS)


def test_most_popular_float_items_raise():
    with pytest.raises(DataError, match="integers"):
        most_popular_scores(torch.tensor([1.0]), N_ROWS)


# top_rated


def test_top_rated_quantile_cut_order():
    # Counts over rated items: [4, 4, 1, 3], so the median 3.5 keeps items 1 and 2.
    assert np.quantile([4, 4, 1, 3], 0.5) == 3.5
    scores = top_rated_scores(ITEMS, RATINGS, N_ROWS, quantile=0.5, n_items=N_ITEMS)
    # Eligible by mean (2: 4.0, 1: 3.0), then the rest by mean (3: 5.0, 4: 2.0).
    assert order_of(scores) == [2, 1, 3, 4]


def test_top_rated_quantile_zero_ranks_by_mean():
    scores = top_rated_scores(ITEMS, RATINGS, N_ROWS, quantile=0.0, n_items=N_ITEMS)
    assert order_of(scores) == [3, 2, 1, 4]


def test_top_rated_cut_is_inclusive():
    # The 0.75 quantile of [4, 4, 1, 3] is exactly 4, so items with 4 ratings stay.
    scores = top_rated_scores(ITEMS, RATINGS, N_ROWS, quantile=0.75, n_items=N_ITEMS)
    assert order_of(scores)[:2] == [2, 1]


def test_top_rated_unrated_item_last():
    items = torch.tensor([1, 2, 2])
    ratings = torch.tensor([1.0, 2.0, 2.0])
    scores = top_rated_scores(items, ratings, 5, quantile=0.5)
    assert order_of(scores) == [2, 1, 3, 4]
    assert float(scores[3]) == float(scores[4])


def test_top_rated_scores_finite_for_real_items():
    scores = top_rated_scores(ITEMS, RATINGS, N_ROWS, n_items=N_ITEMS)
    assert bool(torch.isfinite(scores[1 : N_ITEMS + 1]).all())
    assert scores[0].item() == -math.inf
    assert scores[5].item() == -math.inf


def test_top_rated_equal_means_tie():
    items = torch.tensor([1, 1, 2, 2])
    ratings = torch.tensor([4.0, 2.0, 3.0, 3.0])
    scores = top_rated_scores(items, ratings, 3)
    assert float(scores[1]) == float(scores[2])


def test_top_rated_empty_training_ties():
    empty = torch.zeros(0, dtype=torch.long)
    scores = top_rated_scores(empty, torch.zeros(0), 4)
    assert float(scores[1]) == float(scores[3])


@pytest.mark.parametrize("quantile", [-0.1, 1.5, True])
def test_top_rated_invalid_quantile_raises(quantile):
    with pytest.raises(ConfigError, match="quantile"):
        top_rated_scores(ITEMS, RATINGS, N_ROWS, quantile=quantile)


def test_top_rated_length_mismatch_raises():
    with pytest.raises(DataError, match="one value per"):
        top_rated_scores(ITEMS, RATINGS[:-1], N_ROWS, n_items=N_ITEMS)


def test_top_rated_nan_rating_raises():
    ratings = RATINGS.clone()
    ratings[0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        top_rated_scores(ITEMS, ratings, N_ROWS, n_items=N_ITEMS)


# recent_popular


def recent_case() -> tuple[torch.Tensor, torch.Tensor]:
    # Latest timestamp: day 100, so a 30-day window starts at day 70 (inclusive).
    rows = [
        (1, 1),  # item 1: three old interactions
        (1, 2),
        (1, 3),
        (2, 90),  # item 2: two recent
        (2, 100),
        (3, 95),  # item 3: two recent and one old, so it beats item 2
        (3, 99),
        (3, 10),
        (4, 70),  # item 4: one on the window's first second
    ]
    items = torch.tensor([item for item, _ in rows])
    timestamps = torch.tensor([day * SECONDS_PER_DAY for _, day in rows])
    return items, timestamps


def test_recent_popular_window_and_tie_break():
    items, timestamps = recent_case()
    scores = recent_popular_scores(items, timestamps, N_ROWS, n_items=N_ITEMS)
    assert order_of(scores) == [3, 2, 4, 1]


def test_recent_popular_wide_window_is_all_time():
    items, timestamps = recent_case()
    scores = recent_popular_scores(
        items, timestamps, N_ROWS, window_days=1000, n_items=N_ITEMS
    )
    assert order_of(scores) == [1, 3, 2, 4]


def test_recent_popular_equal_keys_tie():
    items = torch.tensor([1, 2])
    timestamps = torch.tensor([5, 5])
    scores = recent_popular_scores(items, timestamps, 3)
    assert float(scores[1]) == float(scores[2])


def test_recent_popular_special_rows_inf():
    items, timestamps = recent_case()
    scores = recent_popular_scores(items, timestamps, N_ROWS, n_items=N_ITEMS)
    assert scores[0].item() == -math.inf
    assert scores[5].item() == -math.inf


@pytest.mark.parametrize("window_days", [0, -3, True])
def test_recent_popular_invalid_window_raises(window_days):
    items, timestamps = recent_case()
    with pytest.raises(ConfigError, match="window_days"):
        recent_popular_scores(items, timestamps, N_ROWS, window_days=window_days)


# registry and dispatcher


def test_baselines_registry_names():
    assert set(BASELINES) == {"most_popular", "top_rated", "recent_popular"}


def test_baseline_scores_dispatches():
    items, timestamps = recent_case()
    direct = recent_popular_scores(
        items, timestamps, N_ROWS, window_days=5, n_items=N_ITEMS
    )
    dispatched = baseline_scores(
        "recent_popular",
        N_ROWS,
        train_items=items,
        train_timestamps=timestamps,
        n_items=N_ITEMS,
        window_days=5,
    )
    assert torch.equal(direct, dispatched)


def test_baseline_scores_unknown_name_raises():
    with pytest.raises(ConfigError, match="most_popular"):
        baseline_scores("random", N_ROWS, train_items=ITEMS)


def test_baseline_scores_unknown_option_raises():
    with pytest.raises(ConfigError, match="window_days"):
        baseline_scores("most_popular", N_ROWS, train_items=ITEMS, window_days=3)


def test_baseline_scores_missing_ratings_raise():
    with pytest.raises(DataError, match="ratings"):
        baseline_scores("top_rated", N_ROWS, train_items=ITEMS)
