"""PyTorch reference for seen-item-masked top-K: the CPU path and the test oracle.

Shape legend: B batch rows, V catalog items, D hidden width, K top-k, S seen-list
length, E excluded ids.

The formulation is deliberately unlike the Triton kernels: it builds a dense
[B, V] ineligibility mask by scatter and ranks every item with two stable sorts
(scores descending, then eligible before ineligible), so that ties keep ascending
item ids. It costs O(B * V * log V) time and several [B, V] temporaries, which is
fine for an oracle and for CPU evaluation of MovieLens-sized catalogs.

These functions expect arguments already checked by fastrec.kernels.topk.
"""

from __future__ import annotations

import torch


def ineligible_mask(
    seen: torch.Tensor, exclude: torch.Tensor | None, num_items: int
) -> torch.Tensor:
    """Build the [B, V] bool mask of seen or excluded items.

    Ids outside [0, num_items) in ``seen`` or ``exclude`` are ignored.
    """
    batch = seen.shape[0]
    ids = seen.to(torch.int64)
    # Out-of-range ids go to a spare column V that is dropped afterwards.
    ids = torch.where((ids >= 0) & (ids < num_items), ids, num_items)
    mask = torch.zeros(batch, num_items + 1, dtype=torch.bool, device=seen.device)
    mask.scatter_(1, ids, True)
    mask = mask[:, :num_items]
    if exclude is not None:
        excluded = exclude.to(device=seen.device, dtype=torch.int64)
        excluded = excluded[(excluded >= 0) & (excluded < num_items)]
        mask[:, excluded] = True
    return mask


def masked_topk_reference(
    scores: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each row's k best unseen items by sorting the whole row.

    Returns (values [B, k] in the dtype of ``scores``, indices [B, k] int64).
    NaN ranks as -inf, ties go to the lower item id, and slots beyond the
    number of eligible items hold index -1 and value -inf.
    """
    batch, num_items = scores.shape
    values = scores.to(torch.float32)
    values = torch.where(torch.isnan(values), float("-inf"), values)
    blocked = ineligible_mask(seen, exclude, num_items)

    # Stable sorts keep ascending item ids among equal scores (and -0.0 == +0.0).
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    eligible = ~blocked.gather(1, by_score)  # [B, V] in score order
    by_eligibility = torch.sort(
        eligible.to(torch.int8), dim=1, descending=True, stable=True
    ).indices

    taken = min(k, num_items)
    picks = by_eligibility[:, :taken]  # [B, taken] positions in score order
    indices = by_score.gather(1, picks)
    picked_eligible = eligible.gather(1, picks)
    top_values = values.gather(1, indices)
    indices = indices.masked_fill(~picked_eligible, -1)
    top_values = top_values.masked_fill(~picked_eligible, float("-inf"))

    if taken < k:
        pad = k - taken
        indices = torch.cat(
            [indices, indices.new_full((batch, pad), -1)], dim=1
        )  # [B, k]
        top_values = torch.cat(
            [top_values, top_values.new_full((batch, pad), float("-inf"))], dim=1
        )  # [B, k]
    return top_values.to(scores.dtype), indices


def masked_topk_scores_reference(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score all items as fp32 ``hidden @ item_weights.T``, then mask and select.

    Returns (values [B, k] fp32, indices [B, k] int64). This materializes the
    [B, V] score matrix. On CUDA the fp32 matmul follows torch's matmul precision
    setting, so TF32 must stay off (the torch default) for an exact fp32 oracle.
    """
    scores = hidden.to(torch.float32) @ item_weights.to(torch.float32).T  # [B, V]
    return masked_topk_reference(scores, seen, k, exclude)
