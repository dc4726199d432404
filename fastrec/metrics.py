"""Ranking and behavioural metrics for next-item recommendation, shaped for DDP.

Shapes: B batch (users), K top-k list length (Kmax for the widest list), V catalog rows,
G genres.

Item ids are dense: 0 is padding and never a recommendation, real items are 1..n_items,
and rows above n_items (special tokens) are never recommendations either. A top-K slot
of -1 means that no eligible item was left for it.

Every metric works in two steps. A ``*_sums`` function reduces one batch to sums and
counts, as tensors on the input's device and without a host sync, so that ranks can
all-reduce them. A ``finalize_*`` function divides, with one host transfer.

The accumulator classes chain the two across batches and ranks. They keep integer
totals only (a histogram of target ranks, per-item recommendation counts and a
fixed-point diversity sum), because integer addition is exact in any order. Their
results therefore do not depend on the batch size or on how many ranks share the rows,
and an evaluation split over DDP ranks equals the single-process one bit for bit.

NOTE: the tests run on the CPU with gloo. The CUDA and NCCL paths, and the claim of
no host sync on CUDA, have not been checked (torch.cuda.set_sync_debug_mode would).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from fastrec.errors import ConfigError, DataError

RANKING_METRICS = ("HR", "NDCG", "MRR", "MAP", "Precision", "Recall")


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    """Return float64 for sums, or float32 on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _validate_ks(ks: Sequence[int]) -> list[int]:
    """Return the cut-offs without duplicates, in the given order, or raise."""
    if isinstance(ks, (int, np.integer, str)) or len(ks) == 0:
        raise ConfigError(
            f"invalid metric cut-offs {ks!r}: give a non-empty list such as [10, 20]"
        )
    unique: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(
                f"invalid metric cut-off {k!r} in {list(ks)!r}: each K must be an "
                "integer of at least 1"
            )
        if int(k) not in unique:
            unique.append(int(k))
    return unique


def target_ranks(topk_indices: Tensor, targets: Tensor) -> Tensor:
    """Return the 1-based rank of each row's target in its top-K list, 0 if absent.

    ``topk_indices`` is [B, Kmax] and ``targets`` is [B]. When the target occurs more
    than once, its first position counts. Slots below 1 (padding, or -1 for no
    eligible item) never match, so a padding target always gets rank 0.
    """
    if topk_indices.dim() != 2:
        raise ValueError(
            f"topk_indices must be [B, Kmax], got shape {tuple(topk_indices.shape)}"
        )
    if targets.dim() != 1 or targets.shape[0] != topk_indices.shape[0]:
        raise ValueError(
            f"targets must be [B] with B = {topk_indices.shape[0]}, "
            f"got shape {tuple(targets.shape)}"
        )
    batch_size, k_max = topk_indices.shape
    if k_max == 0:
        return torch.zeros(batch_size, dtype=torch.long, device=topk_indices.device)

    targets = targets.to(topk_indices.device)
    matches = (topk_indices == targets.unsqueeze(1)) & (topk_indices >= 1)  # [B, Kmax]
    found = matches.any(dim=1)  # [B]
    # argmax over int8 returns the first maximal slot, which is the first match.
    first = matches.to(torch.int8).argmax(dim=1)  # [B]
    return torch.where(found, first + 1, torch.zeros_like(first))


def ranking_metric_sums(ranks: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Sum the ranking metrics of one batch at each cut-off K.

    ``ranks`` is [B], the 1-based rank of each user's single relevant item, with 0
    (or any value below 1) for a miss. A rank beyond the widest list is 0 already,
    so it counts as a miss at every K. With one relevant item and rank r:

    - ``HR@K`` and ``Recall@K``: 1 if r <= K, else 0.
    - ``NDCG@K``: 1 / log2(r + 1) if r <= K, else 0. The ideal DCG is 1.
    - ``MRR@K``: 1 / r if r <= K, else 0.
    - ``MAP@K``: average precision at K, which for one relevant item equals 1 / r
      if r <= K, else 0, so it matches ``MRR@K``.
    - ``Precision@K``: hit / K. Some older tutorials report this quantity under the
      name "MAP@K", but it is not mean average precision.

    Returns one float sum per metric as a 0-d tensor on ``ranks.device``, keyed like
    ``"NDCG@10"``, plus ``"users"``, the int64 count of rows. The sums are float64
    except on MPS (float32).
    """
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be [B], got shape {tuple(ranks.shape)}")
    if ranks.is_floating_point() or ranks.is_complex() or ranks.dtype == torch.bool:
        raise ValueError(f"ranks must be an integer tensor, got {ranks.dtype}")
    cutoffs = _validate_ks(ks)
    dtype = _accumulation_dtype(ranks.device)

    ranks = ranks.to(torch.long)
    positive = ranks.clamp(min=1).to(dtype)  # [B], 1 in place of a miss
    reciprocal = 1.0 / positive
    discount = 1.0 / torch.log2(positive + 1.0)

    sums: dict[str, Tensor] = {}
    for k in cutoffs:
        hit = ((ranks >= 1) & (ranks <= k)).to(dtype)  # [B]
        hits = hit.sum()
        reciprocal_sum = (hit * reciprocal).sum()
        sums[f"HR@{k}"] = hits
        sums[f"NDCG@{k}"] = (hit * discount).sum()
        sums[f"MRR@{k}"] = reciprocal_sum
        sums[f"MAP@{k}"] = reciprocal_sum.clone()
        sums[f"Precision@{k}"] = hits / k
        sums[f"Recall@{k}"] = hits.clone()
    # torch.full fills on the device, where torch.tensor would copy from the host.
    sums["users"] = torch.full(
        (), ranks.shape[0], dtype=torch.long, device=ranks.device
    )
    return sums


def _to_host(values: Sequence[Tensor]) -> list[float]:
    """Copy 0-d tensors to Python floats with one device-to-host transfer."""
    if not values:
        return []
    device = values[0].device
    dtype = _accumulation_dtype(device)
    stacked = torch.stack([value.to(device=device, dtype=dtype) for value in values])
    return stacked.cpu().tolist()


def finalize_metrics(sums: dict[str, Tensor]) -> dict[str, float]:
    """Divide ranking metric sums by the user count and copy them to the host.

    ``sums`` comes from ``ranking_metric_sums`` or from adding several of its
    results. ``"users"`` is kept as an int. With 0 users every metric is NaN,
    because a mean over no users is undefined.
    """
    if "users" not in sums:
        raise ValueError(f"metric sums lack the 'users' count, keys: {sorted(sums)}")
    names = [name for name in sums if name != "users"]
    host = _to_host([sums["users"], *(sums[name] for name in names)])
    users = int(host[0])

    result: dict[str, float] = {}
    for name, total in zip(names, host[1:]):
        result[name] = total / users if users > 0 else float("nan")
    result["users"] = users
    return result


def _all_reduce_sum(tensors: Sequence[Tensor], group: object | None = None) -> None:
    """Replace each tensor by its sum over all ranks, one collective per dtype.

    Does nothing unless torch.distributed is initialized. The tensors must live on a
    device that the process group's backend supports (CUDA for NCCL, CPU for gloo).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for same_dtype in by_dtype.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in same_dtype])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for tensor in same_dtype:
            size = tensor.numel()
            tensor.copy_(flat[offset : offset + size].view_as(tensor))
            offset += size


class _SumAccumulator:
    """Running sums on one device, summed over ranks once before the final divide."""

    def __init__(self, device: torch.device | str) -> None:
        # An empty tensor resolves "cuda" to "cuda:0", the form that tensor.device has.
        self.device = torch.empty(0, device=device).device
        self._sums: dict[str, Tensor] = self._zero_sums()
        self._reduced = False

    def _zero_sums(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def _add(self, batch_sums: dict[str, Tensor]) -> None:
        if self._reduced:
            raise RuntimeError(
                "update() after all_reduce() would mix global and local sums; "
                "call reset() first"
            )
        for name, value in batch_sums.items():
            self._sums[name] += value

    def _check_device(self, tensor: Tensor) -> None:
        # Comparing devices reads metadata only, so the check costs no host sync.
        if tensor.device != self.device:
            raise ValueError(
                f"input is on {tensor.device} but the accumulator is on "
                f"{self.device}; create the accumulator with device={tensor.device}"
            )

    def all_reduce(self, group: object | None = None) -> None:
        """Sum the accumulated tensors over all ranks, in place.

        Does nothing unless torch.distributed is initialized. Every rank must call it,
        even a rank that saw no batch. Calling it twice without ``reset()`` raises
        RuntimeError, because the second call would count every batch again.
        """
        if self._reduced:
            raise RuntimeError("all_reduce() was already called; call reset() first")
        _all_reduce_sum(list(self._sums.values()), group=group)
        self._reduced = True

    def reset(self) -> None:
        """Set every sum back to zero."""
        self._sums = self._zero_sums()
        self._reduced = False

    @property
    def sums(self) -> dict[str, Tensor]:
        """Running totals, local until ``all_reduce()`` and global after it."""
        return dict(self._sums)


class MetricAccumulator(_SumAccumulator):
    """Ranking metrics over many batches, on one device, ready for all-reduce.

    The running total is a histogram of target ranks: int64 counts of users at each
    rank 1..Kmax, with bin 0 for misses (Kmax is the largest cut-off). ``compute``
    derives the metric sums from it, so they are the same for any batching or rank
    split. ``update`` adds one batch on the device without a host sync,
    ``all_reduce`` sums over ranks, and ``compute`` returns the means as floats.
    Inputs must be on ``device``.
    """

    def __init__(self, ks: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.ks = _validate_ks(ks)
        self.k_max = max(self.ks)
        super().__init__(device)

    def _zero_sums(self) -> dict[str, Tensor]:
        counts = torch.zeros(self.k_max + 1, dtype=torch.long, device=self.device)
        return {"rank_counts": counts}

    def update(self, ranks: Tensor) -> None:
        """Add one batch of target ranks ([B], 0 for a miss) to the histogram."""
        self._check_device(ranks)
        if ranks.dim() != 1:
            raise ValueError(f"ranks must be [B], got shape {tuple(ranks.shape)}")
        ranks = ranks.to(torch.long)
        # A rank beyond the largest cut-off is a miss at every K.
        bins = torch.where((ranks >= 1) & (ranks <= self.k_max), ranks, 0)
        # scatter_add_ needs no host sync, unlike bincount on CUDA.
        counts = torch.zeros(self.k_max + 1, dtype=torch.long, device=self.device)
        counts.scatter_add_(0, bins, torch.ones_like(bins))
        self._add({"rank_counts": counts})

    def metric_sums(self) -> dict[str, Tensor]:
        """Return the sums of ``ranking_metric_sums`` computed from the histogram."""
        counts = self._sums["rank_counts"]
        dtype = _accumulation_dtype(self.device)
        rank = torch.arange(1, self.k_max + 1, dtype=dtype, device=self.device)
        users_at_rank = counts[1:].to(dtype)  # [Kmax]
        sums: dict[str, Tensor] = {}
        for k in self.ks:
            hit = users_at_rank[:k]
            hits = hit.sum()
            reciprocal_sum = (hit / rank[:k]).sum()
            sums[f"HR@{k}"] = hits
            sums[f"NDCG@{k}"] = (hit / torch.log2(rank[:k] + 1.0)).sum()
            sums[f"MRR@{k}"] = reciprocal_sum
            sums[f"MAP@{k}"] = reciprocal_sum.clone()
            sums[f"Precision@{k}"] = hits / k
            sums[f"Recall@{k}"] = hits.clone()
        sums["users"] = counts.sum()
        return sums

    def compute(self) -> dict[str, float]:
        """Return the mean of each metric over the users seen so far."""
        return finalize_metrics(self.metric_sums())


@dataclass(frozen=True)
class ItemStatistics:
    """Per-item tables, V rows each, that the behavioural metrics look up.

    Build it with ``build_item_statistics``.
    """

    n_items: int
    # [V] float: number of distinct training users who interacted with each item.
    popularity: Tensor
    # [V] float: -log2 p(i) in bits, with the floor of build_item_statistics.
    self_information: Tensor
    # Mean popularity over the real items 1..n_items, never-seen items included.
    catalog_popularity_mean: float
    # [V, G] float: genre vectors scaled to unit length, zero rows where no genre.
    genre_unit_vectors: Tensor | None = None

    def to(self, device: torch.device | str) -> ItemStatistics:
        """Return a copy whose tables live on ``device``."""
        genres = self.genre_unit_vectors
        return ItemStatistics(
            n_items=self.n_items,
            popularity=self.popularity.to(device),
            self_information=self.self_information.to(device),
            catalog_popularity_mean=self.catalog_popularity_mean,
            genre_unit_vectors=None if genres is None else genres.to(device),
        )

    @property
    def device(self) -> torch.device:
        """Device of the tables."""
        return self.popularity.device


def count_item_users(
    train_users: Tensor | np.ndarray, train_items: Tensor | np.ndarray, n_rows: int
) -> Tensor:
    """Count the distinct training users of each item, as an int64 tensor [n_rows].

    ``train_users`` and ``train_items`` are the dense ids of the training
    interactions, one pair per interaction. A user who interacted with an item
    several times counts once. The result is on the device of ``train_users``.
    """
    users = torch.as_tensor(train_users)
    items = torch.as_tensor(train_items, device=users.device)
    if users.shape != items.shape or users.dim() != 1:
        raise DataError(
            f"training users and items must be 1-D and of equal length, got shapes "
            f"{tuple(users.shape)} and {tuple(items.shape)}"
        )
    if users.is_floating_point() or items.is_floating_point():
        raise DataError("training user and item ids must be integers")
    users = users.to(torch.long)
    items = items.to(torch.long)
    if items.numel() > 0 and (int(items.min()) < 0 or int(items.max()) >= n_rows):
        raise DataError(
            f"training item ids span {int(items.min())}..{int(items.max())} but the "
            f"catalog has rows 0..{n_rows - 1}; rebuild the item id map"
        )
    if users.numel() > 0 and int(users.min()) < 0:
        raise DataError(f"training user ids must be >= 0, found {int(users.min())}")

    pairs = torch.unique(users * n_rows + items)  # one entry per (user, item)
    return torch.bincount(pairs % n_rows, minlength=n_rows)


def build_item_statistics(
    item_user_counts: Tensor,
    n_train_users: int,
    n_items: int | None = None,
    item_genres: Tensor | None = None,
) -> ItemStatistics:
    """Build the per-item tables for novelty, popularity bias and diversity.

    ``item_user_counts`` is [V], the number of distinct training users per item
    (see ``count_item_users``). ``n_items`` is the number of real items and
    defaults to V - 1. ``item_genres`` is an optional multi-hot [V, G] tensor.

    Self-information is -log2 p(i) with p(i) = count(i) / n_train_users. An item
    that no training user saw gets the floor count of 1, so its self-information is
    log2(n_train_users), the same as an item seen by exactly one user. The tables
    are float64 on the device of ``item_user_counts`` (float32 on MPS).
    """
    if item_user_counts.dim() != 1:
        raise DataError(
            f"item user counts must be [V], got shape {tuple(item_user_counts.shape)}"
        )
    n_rows = item_user_counts.shape[0]
    if n_items is None:
        n_items = n_rows - 1
    if not 1 <= n_items <= n_rows - 1:
        raise DataError(
            f"n_items = {n_items} does not fit a catalog of {n_rows} rows; real items "
            "are rows 1..n_items"
        )
    if n_train_users < 1:
        raise DataError(
            f"n_train_users = {n_train_users}: novelty needs at least one training user"
        )
    device = item_user_counts.device
    dtype = _accumulation_dtype(device)
    counts = item_user_counts.to(dtype)
    max_count = float(counts.max())
    if float(counts.min()) < 0 or max_count > n_train_users:
        raise DataError(
            f"item user counts span {float(counts.min()):g}..{max_count:g} but must "
            f"lie in 0..n_train_users = {n_train_users}"
        )

    probability = counts.clamp(min=1.0) / n_train_users
    self_information = -torch.log2(probability)
    catalog_mean = float(counts[1 : n_items + 1].mean())

    genre_unit_vectors = None
    if item_genres is not None:
        if item_genres.dim() != 2 or item_genres.shape[0] != n_rows:
            raise DataError(
                f"item genres must be [V, G] with V = {n_rows}, got shape "
                f"{tuple(item_genres.shape)}"
            )
        genres = item_genres.to(device=device, dtype=dtype)
        norms = torch.linalg.vector_norm(genres, dim=1, keepdim=True)  # [V, 1]
        genre_unit_vectors = genres / norms.clamp(min=1e-12)

    return ItemStatistics(
        n_items=n_items,
        popularity=counts,
        self_information=self_information,
        catalog_popularity_mean=catalog_mean,
        genre_unit_vectors=genre_unit_vectors,
    )


def _counted_slots(
    topk_indices: Tensor, stats: ItemStatistics
) -> tuple[Tensor, Tensor]:
    """Check a batch of top-K lists and return (rows, valid), both [B, K].

    ``valid`` marks the slots that contain a real item, 1..n_items. ``rows`` is the
    slot's item, or row 0 in place of a skipped slot.
    """
    if topk_indices.dim() != 2:
        raise ValueError(
            f"topk_indices must be [B, K], got shape {tuple(topk_indices.shape)}"
        )
    if topk_indices.device != stats.device:
        raise ValueError(
            f"top-K lists are on {topk_indices.device} but the item statistics are "
            f"on {stats.device}; move them with stats.to(device)"
        )
    indices = topk_indices.to(torch.long)
    valid = (indices >= 1) & (indices <= stats.n_items)  # [B, K]
    rows = torch.where(valid, indices, torch.zeros_like(indices))
    return rows, valid


def _recommendation_counts(rows: Tensor, valid: Tensor, n_rows: int) -> Tensor:
    """Count how often each of the ``n_rows`` catalog rows fills a valid slot."""
    item_counts = torch.zeros(n_rows, dtype=torch.long, device=rows.device)
    item_counts.scatter_add_(0, rows.reshape(-1), valid.reshape(-1).to(torch.long))
    return item_counts


def _list_diversity(
    rows: Tensor, weight: Tensor, genre_unit_vectors: Tensor
) -> tuple[Tensor, Tensor]:
    """Return each list's mean pairwise genre distance [B] and whether it has a pair.

    ``weight`` [B, K] is 1 for a counted slot and 0 for a skipped one.
    """
    unit = genre_unit_vectors[rows] * weight.unsqueeze(-1)  # [B, K, G]
    # Over unordered pairs i < j, sum cos(i, j) = (|sum_i u_i|^2 - sum_i |u_i|^2)
    # / 2 for unit or zero vectors u, which avoids the [B, K, K] matrix.
    total = unit.sum(dim=1)  # [B, G]
    squared_norms = (unit * unit).sum(dim=(1, 2))  # [B]
    cosine_sum = ((total * total).sum(dim=1) - squared_norms) / 2.0  # [B]
    counted = weight.sum(dim=1)  # [B]
    pairs = counted * (counted - 1.0) / 2.0  # [B]
    has_pairs = pairs > 0
    mean_distance = 1.0 - cosine_sum / pairs.clamp(min=1.0)  # [B]
    return torch.where(has_pairs, mean_distance, 0.0), has_pairs


def behaviour_metric_sums(
    topk_indices: Tensor, stats: ItemStatistics
) -> dict[str, Tensor]:
    """Sum the behavioural statistics of one batch of top-K lists ([B, K]).

    A slot counts only if it contains a real item, 1..n_items. The others (-1 for no
    eligible item, padding, special tokens) are skipped. Returns tensors on the
    input's device, with no host sync:

    - ``item_counts`` [V] int64: how often each row was recommended.
    - ``lists``: number of lists (B). ``slots``: number of counted slots.
    - ``self_information``: sum of -log2 p(i) over counted slots, in bits.
    - ``popularity``: sum of the training user counts of the counted items.
    - ``diversity`` and ``diversity_lists`` (only when ``stats`` has genres): the
      sum, over lists with at least 2 counted items, of the list's mean pairwise
      genre distance, and the number of such lists. The distance between items i
      and j is 1 - cos(g_i, g_j) of their multi-hot genre vectors, and an item
      without genres has cosine 0 with every item.
    """
    rows, valid = _counted_slots(topk_indices, stats)
    device = rows.device
    # ``weight`` zeroes the values that row 0 contributes in place of skipped slots.
    weight = valid.to(stats.popularity.dtype)
    sums: dict[str, Tensor] = {
        "item_counts": _recommendation_counts(rows, valid, stats.popularity.shape[0]),
        "lists": torch.full((), rows.shape[0], dtype=torch.long, device=device),
        "slots": valid.sum(dtype=torch.long),
        "self_information": (stats.self_information[rows] * weight).sum(),
        "popularity": (stats.popularity[rows] * weight).sum(),
    }
    if stats.genre_unit_vectors is not None:
        distance, has_pairs = _list_diversity(rows, weight, stats.genre_unit_vectors)
        sums["diversity"] = distance.sum()
        sums["diversity_lists"] = has_pairs.sum(dtype=torch.long)
    return sums


def finalize_behaviour_metrics(
    sums: dict[str, Tensor], stats: ItemStatistics
) -> dict[str, float]:
    """Turn behavioural sums into the final metrics, with one host transfer.

    - ``coverage``: distinct recommended real items / n_items.
    - ``diversity`` (only with genres): mean over lists with at least 2 items of
      the mean pairwise genre distance (see ``behaviour_metric_sums``).
    - ``novelty``: mean self-information -log2 p(i) over recommended slots, in bits.
    - ``popularity_mean``: mean training user count over recommended slots.
    - ``popularity_bias``: popularity_mean / the mean over all real items, so 1 means
      no bias toward popular items.
    - ``covered_items``, ``lists``, ``slots``: the counts behind them, as ints.

    A mean over nothing (no slots, no list with 2 items) is NaN.
    """
    covered = (sums["item_counts"][1 : stats.n_items + 1] > 0).sum()
    names = ["lists", "slots", "self_information", "popularity"]
    if "diversity" in sums:
        names += ["diversity", "diversity_lists"]
    host = dict(
        zip(["covered", *names], _to_host([covered, *(sums[n] for n in names)]))
    )

    def mean(total: float, count: float) -> float:
        return total / count if count > 0 else float("nan")

    popularity_mean = mean(host["popularity"], host["slots"])
    result: dict[str, float] = {
        "coverage": host["covered"] / stats.n_items,
        "novelty": mean(host["self_information"], host["slots"]),
        "popularity_mean": popularity_mean,
        "popularity_bias": mean(popularity_mean, stats.catalog_popularity_mean),
    }
    if "diversity" in sums:
        result["diversity"] = mean(host["diversity"], host["diversity_lists"])
    result["covered_items"] = int(host["covered"])
    result["lists"] = int(host["lists"])
    result["slots"] = int(host["slots"])
    return result


# Fixed-point scale of the diversity totals: a list's mean distance (at most 2) is
# stored as round(distance * 2**32). The int64 sum cannot overflow below 2**30 lists,
# and the rounding changes the mean diversity by at most 2**-33.
_DIVERSITY_SCALE = 2**32


class BehaviourAccumulator(_SumAccumulator):
    """Behavioural metrics over many batches of top-K lists, ready for all-reduce.

    Coverage, genre diversity, novelty and popularity bias, as defined in
    ``behaviour_metric_sums`` and ``finalize_behaviour_metrics``. The running totals
    are integers: a [V] count of how often each item was recommended (from which
    coverage, novelty and popularity follow), the number of lists, and a fixed-point
    sum of the lists' diversity. Ranks sum them exactly before ``compute`` derives
    the metrics, so the result is the same for any batching or rank split.
    ``update`` adds on the device without a host sync, ``all_reduce`` sums over
    ranks, and ``compute`` returns floats. Inputs must be on the device of ``stats``.
    """

    def __init__(
        self, stats: ItemStatistics, device: torch.device | str | None = None
    ) -> None:
        self.stats = stats if device is None else stats.to(device)
        super().__init__(self.stats.device)

    def _zero_sums(self) -> dict[str, Tensor]:
        empty = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        return self._batch_totals(empty)

    def _batch_totals(self, topk_indices: Tensor) -> dict[str, Tensor]:
        rows, valid = _counted_slots(topk_indices, self.stats)
        n_rows = self.stats.popularity.shape[0]
        totals = {
            "item_counts": _recommendation_counts(rows, valid, n_rows),
            "lists": torch.full(
                (), rows.shape[0], dtype=torch.long, device=self.device
            ),
        }
        if self.stats.genre_unit_vectors is not None:
            weight = valid.to(self.stats.popularity.dtype)
            distance, has_pairs = _list_diversity(
                rows, weight, self.stats.genre_unit_vectors
            )
            fixed = torch.round(distance * _DIVERSITY_SCALE).to(torch.long)
            totals["diversity_fixed"] = fixed.sum()
            totals["diversity_lists"] = has_pairs.sum(dtype=torch.long)
        return totals

    def update(self, topk_indices: Tensor) -> None:
        """Add one batch of top-K lists ([B, K], -1 for an empty slot)."""
        self._check_device(topk_indices)
        self._add(self._batch_totals(topk_indices))

    def metric_sums(self) -> dict[str, Tensor]:
        """Return the sums of ``behaviour_metric_sums`` computed from the totals."""
        totals = self._sums
        item_counts = totals["item_counts"]
        counts = item_counts.to(self.stats.popularity.dtype)
        sums = {
            "item_counts": item_counts,
            "lists": totals["lists"],
            # Only real items are ever counted, so the counts add up to the slots.
            "slots": item_counts.sum(),
            "self_information": (counts * self.stats.self_information).sum(),
            "popularity": (counts * self.stats.popularity).sum(),
        }
        if "diversity_fixed" in totals:
            fixed = totals["diversity_fixed"].to(self.stats.popularity.dtype)
            sums["diversity"] = fixed / _DIVERSITY_SCALE
            sums["diversity_lists"] = totals["diversity_lists"]
        return sums

    def compute(self) -> dict[str, float]:
        """Return the behavioural metrics over the lists seen so far."""
        return finalize_behaviour_metrics(self.metric_sums(), self.stats)
