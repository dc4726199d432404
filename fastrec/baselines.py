"""Popularity baselines that score every catalog row from training interactions alone.

Shapes: V catalog rows (``n_rows``), N training interactions.

Each function returns a float32 score tensor [V] for the top-K kernel: a higher score
ranks higher, and equal scores are left for the kernel to break by the lower id. Row 0
(padding) and rows above ``n_items`` (special tokens) score -inf, so they are never
recommended. A real item with no training interaction gets a finite score below every
item that has one. Scores are computed on the CPU and returned on the device of
``train_items`` when it is a tensor, or on the CPU otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from fastrec.errors import ConfigError, DataError

SECONDS_PER_DAY = 86_400

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _output_device(values: ArrayLike) -> torch.device:
    return values.device if isinstance(values, Tensor) else torch.device("cpu")


def _column(values: ArrayLike, name: str, length: int | None = None) -> Tensor:
    """Return a 1-D CPU tensor of ``values``, or raise DataError naming ``name``."""
    if isinstance(values, Tensor):
        column = values.detach().cpu()
    else:
        column = torch.as_tensor(np.asarray(values))
    if column.dim() != 1:
        raise DataError(f"{name} must be 1-D, got shape {tuple(column.shape)}")
    if length is not None and column.shape[0] != length:
        raise DataError(
            f"{name} has {column.shape[0]} entries but the training items have "
            f"{length}; pass one value per training interaction"
        )
    return column


def _items_column(train_items: ArrayLike, n_rows: int, n_items: int | None) -> Tensor:
    """Validate the training item ids and return them as int64 on the CPU."""
    if n_items is None:
        n_items = n_rows - 1
    if not 0 <= n_items <= n_rows - 1:
        raise ValueError(
            f"n_items = {n_items} does not fit {n_rows} catalog rows; real items are "
            "rows 1..n_items"
        )
    items = _column(train_items, "training item ids")
    if items.is_floating_point() or items.dtype == torch.bool:
        raise DataError(f"training item ids must be integers, got {items.dtype}")
    items = items.to(torch.long)
    if items.numel() > 0:
        low, high = int(items.min()), int(items.max())
        if low < 1 or high > n_items:
            raise DataError(
                f"training item ids span {low}..{high} but real items are "
                f"1..{n_items}; 0 is padding, so rebuild the item id map"
            )
    return items


def _real_item_scores(values: Tensor, n_rows: int, n_items: int | None) -> Tensor:
    """Copy per-row values to float32 scores, with -inf outside the real items."""
    if n_items is None:
        n_items = n_rows - 1
    scores = values.to(torch.float32).clone()
    scores[0] = float("-inf")
    scores[n_items + 1 :] = float("-inf")
    return scores


def _dense_rank(keys: Tensor) -> Tensor:
    """Rank the rows of ``keys`` [V, C] lexicographically, 0 for the smallest row.

    Equal rows get equal ranks. The ranks are consecutive integers, so they stay
    exact in float32 for up to 2**24 distinct keys.
    """
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [V]
    return inverse


def most_popular_scores(
    train_items: ArrayLike, n_rows: int, *, n_items: int | None = None
) -> Tensor:
    """Score each item by its number of training interactions (rating count).

    ``train_items`` contains the dense item id of each training interaction.
    ``n_items`` is the number of real items and defaults to ``n_rows - 1``.
    """
    items = _items_column(train_items, n_rows, n_items)
    counts = torch.bincount(items, minlength=n_rows)  # [V]
    return _real_item_scores(counts, n_rows, n_items).to(_output_device(train_items))


def top_rated_scores(
    train_items: ArrayLike,
    train_ratings: ArrayLike,
    n_rows: int,
    quantile: float = 0.95,
    *,
    n_items: int | None = None,
) -> Tensor:
    """Score items by mean rating, among those with enough ratings to trust it.

    An item is eligible when its rating count is at or above the ``quantile`` of the
    rating counts of items with at least one rating (linear interpolation, as in
    ``numpy.quantile``). The order is lexicographic over three tiers: eligible items
    by mean rating, then the other rated items by mean rating, then unrated items.
    This keeps every list full where -inf for ineligible items would cut lists
    short. The scores encode that order as dense ranks (1 for the lowest, equal for
    equal keys), so only their order is meaningful.
    """
    if isinstance(quantile, bool) or not 0.0 <= float(quantile) <= 1.0:
        raise ConfigError(
            f"invalid top_rated quantile {quantile!r}: give a number from 0 to 1"
        )
    items = _items_column(train_items, n_rows, n_items)
    ratings = _column(train_ratings, "training ratings", length=items.shape[0])
    if ratings.dtype == torch.bool:
        raise DataError("training ratings must be numbers, got bool")
    ratings = ratings.to(torch.float64)
    if not bool(torch.isfinite(ratings).all()):
        raise DataError("training ratings contain NaN or infinite values")

    counts = torch.bincount(items, minlength=n_rows).to(torch.float64)  # [V]
    totals = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, items, ratings)
    rated = counts > 0
    means = torch.where(rated, totals / counts.clamp(min=1.0), 0.0)  # [V]

    tier = rated.to(torch.float64)  # 1 for rated, 0 for unrated
    if bool(rated.any()):
        threshold = torch.quantile(counts[rated], float(quantile))
        tier = tier + (rated & (counts >= threshold)).to(torch.float64)

    keys = torch.stack([tier, means], dim=1)  # [V, 2], tier first
    ranks = _dense_rank(keys).to(torch.float64) + 1.0
    return _real_item_scores(ranks, n_rows, n_items).to(_output_device(train_items))


def recent_popular_scores(
    train_items: ArrayLike,
    train_timestamps: ArrayLike,
    n_rows: int,
    window_days: float = 30,
    *,
    n_items: int | None = None,
) -> Tensor:
    """Score items by their interactions in the last ``window_days`` of training.

    The window is [t_max - window_days days, t_max], where t_max is the latest
    training timestamp and timestamps are in seconds (as in MovieLens). Items with
    equal recent counts are ordered by all-time count. The scores encode that order
    as dense ranks (1 for the lowest, equal for equal keys), so only their order is
    meaningful.
    """
    if isinstance(window_days, bool) or not float(window_days) > 0:
        raise ConfigError(
            f"invalid recent_popular window_days {window_days!r}: give a positive "
            "number of days"
        )
    items = _items_column(train_items, n_rows, n_items)
    timestamps = _column(train_timestamps, "training timestamps", items.shape[0])
    if timestamps.dtype == torch.bool:
        raise DataError("training timestamps must be numbers, got bool")
    timestamps = timestamps.to(torch.float64)

    all_time = torch.bincount(items, minlength=n_rows)  # [V]
    recent = torch.zeros_like(all_time)
    if items.numel() > 0:
        start = float(timestamps.max()) - float(window_days) * SECONDS_PER_DAY
        in_window = timestamps >= start  # [N]
        recent = torch.bincount(
            items, weights=in_window.to(torch.float64), minlength=n_rows
        )
        recent = recent.to(torch.long)

    keys = torch.stack([recent, all_time], dim=1)  # [V, 2], recent first
    ranks = _dense_rank(keys).to(torch.float64) + 1.0
    return _real_item_scores(ranks, n_rows, n_items).to(_output_device(train_items))


BASELINES: dict[str, Callable[..., Tensor]] = {
    "most_popular": most_popular_scores,
    "top_rated": top_rated_scores,
    "recent_popular": recent_popular_scores,
}


# Keyword options that each baseline accepts from a config.
_BASELINE_OPTIONS: dict[str, tuple[str, ...]] = {
    "most_popular": (),
    "top_rated": ("quantile",),
    "recent_popular": ("window_days",),
}


def baseline_scores(
    name: str,
    n_rows: int,
    *,
    train_items: ArrayLike,
    train_ratings: ArrayLike | None = None,
    train_timestamps: ArrayLike | None = None,
    n_items: int | None = None,
    **options: float,
) -> Tensor:
    """Compute the scores of the baseline ``name`` from the training columns.

    Passes each baseline the columns it needs: ratings for ``top_rated``, timestamps
    for ``recent_popular``. ``options`` go to the baseline as keyword arguments,
    such as ``quantile`` or ``window_days``.
    """
    if name not in BASELINES:
        raise ConfigError(
            f"unknown baseline {name!r}: choose one of {', '.join(sorted(BASELINES))}"
        )
    unknown = sorted(set(options) - set(_BASELINE_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_BASELINE_OPTIONS[name]) or "none"
        raise ConfigError(
            f"unknown option {', '.join(unknown)} for baseline {name!r}; "
            f"allowed options: {allowed}"
        )
    if name == "top_rated":
        if train_ratings is None:
            raise DataError("the top_rated baseline needs the training ratings")
        return top_rated_scores(
            train_items, train_ratings, n_rows, n_items=n_items, **options
        )
    if name == "recent_popular":
        if train_timestamps is None:
            raise DataError("the recent_popular baseline needs the training timestamps")
        return recent_popular_scores(
            train_items, train_timestamps, n_rows, n_items=n_items, **options
        )
    return most_popular_scores(train_items, n_rows, n_items=n_items, **options)
