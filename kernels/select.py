"""Seen-item-masked top-K in plain PyTorch, the fast path off the GPU.

Shape legend: B batch rows, V catalog items, K top-k.

``torch.topk`` finds the right set of values but breaks ties among equal scores in
no documented order. A row's result is exact when its k-th value is finite and
the (k + 1)-th is lower, because the top-k set is then unique. Such
rows only need their k picks ordered by (score descending, item id ascending).
The other rows (a tie across the cut, or fewer than k eligible items) go through
the sort-based reference. With float scores they are rare, so the step costs one
``topk`` and a few elementwise passes over [B, V] instead of two full sorts.
"""

from __future__ import annotations

import torch

from .keys import encode_keys
from .reference import masked_topk_reference


def blocked_scores(
    scores: torch.Tensor, seen: torch.Tensor, exclude: torch.Tensor | None
) -> torch.Tensor:
    """Return fp32 scores [B, V] with NaN, seen and excluded items set to -inf.

    One pass copies the scores (NaN to -inf) into a [B, V + 1] buffer. Its spare
    last column takes the ids outside [0, V), so the seen and excluded ids can be
    scattered in without a dense [B, V] mask.
    """
    batch, num_items = scores.shape
    values = scores.to(torch.float32)
    if torch.is_grad_enabled() and scores.requires_grad:
        # out= does not record gradients, so this path copies once more.
        spare = values.new_full((batch, 1), -torch.inf)
        buffer = torch.cat([_finite_or_inf(values), spare], dim=1)
    else:
        buffer = torch.empty(
            batch, num_items + 1, dtype=torch.float32, device=scores.device
        )
        _finite_or_inf(values, out=buffer[:, :num_items])
    masked = buffer[:, :num_items]
    ids = seen.to(torch.int64)
    ids = torch.where((ids >= 0) & (ids < num_items), ids, num_items)
    buffer.scatter_(1, ids, -torch.inf)
    if exclude is not None:
        excluded = exclude.to(device=scores.device, dtype=torch.int64)
        excluded = excluded[(excluded >= 0) & (excluded < num_items)]
        masked.index_fill_(1, excluded, -torch.inf)
    return masked


def _finite_or_inf(values: torch.Tensor, out: torch.Tensor | None = None):
    """Replace NaN with -inf and keep the infinities (nan_to_num would clip them)."""
    return torch.nan_to_num(
        values, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf, out=out
    )


def masked_topk_torch(
    scores: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each row's k best unseen items with the reference's exact semantics.

    Returns (values [B, k] in the dtype of ``scores``, indices [B, k] int64).
    The arguments must already be checked by fastrec.kernels.topk.
    """
    batch, num_items = scores.shape
    num_picks = min(k, num_items)
    if batch == 0 or num_items == 0:
        return masked_topk_reference(scores, seen, k, exclude)
    masked = blocked_scores(scores, seen, exclude)  # [B, V]
    # One pick more than needed shows whether the cut falls between two equal
    # values: the top-k set is unique when the next value is strictly lower.
    extra = min(num_picks + 1, num_items)
    top_values, top_ids = torch.topk(masked, extra, dim=1)  # [B, extra]
    threshold = top_values[:, num_picks - 1]  # [B]
    if extra > num_picks:
        unique = top_values[:, num_picks] < threshold  # [B]
        top_values, top_ids = top_values[:, :num_picks], top_ids[:, :num_picks]
    else:
        unique = torch.ones_like(threshold, dtype=torch.bool)  # every item is picked
    exact = unique & (threshold > float("-inf"))  # [B]

    # Order the picks of exact rows by (score descending, id ascending).
    order = encode_keys(top_values, top_ids).argsort(dim=1, descending=True)
    indices = top_ids.gather(1, order)  # [B, num_picks]
    out_values = top_values.gather(1, order)  # [B, num_picks]
    if num_picks < k:
        pad = k - num_picks
        indices = torch.cat([indices, indices.new_full((batch, pad), -1)], dim=1)
        out_values = torch.cat(
            [out_values, out_values.new_full((batch, pad), float("-inf"))], dim=1
        )

    rest = (~exact).nonzero().squeeze(1)  # rows whose cut needs the full rules
    if rest.numel() > 0:
        rest_values, rest_indices = masked_topk_reference(
            scores[rest], seen[rest], k, exclude
        )
        out_values[rest] = rest_values.to(torch.float32)
        indices[rest] = rest_indices
    return out_values.to(scores.dtype), indices


def masked_topk_scores_torch(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score all items as fp32 ``hidden @ item_weights.T``, then mask and select.

    Returns (values [B, k] fp32, indices [B, k] int64).
    """
    scores = hidden.to(torch.float32) @ item_weights.to(torch.float32).T  # [B, V]
    return masked_topk_torch(scores, seen, k, exclude)
