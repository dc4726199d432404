"""The fast PyTorch top-K path against the sort-based reference."""

from __future__ import annotations

import pytest
import torch

from fastrec.kernels import masked_topk, masked_topk_reference, masked_topk_scores
from fastrec.kernels.reference import masked_topk_scores_reference
from fastrec.kernels.select import masked_topk_torch


def assert_same(actual, expected):
    values, indices = actual
    ref_values, ref_indices = expected
    assert values.dtype == ref_values.dtype
    assert torch.equal(indices, ref_indices)
    assert torch.equal(values, ref_values)


@pytest.mark.parametrize(
    "batch, items, width, k",
    [
        (1, 1, 0, 1),
        (3, 1, 2, 4),
        (4, 3, 0, 5),
        (5, 3, 3, 2),
        (6, 17, 4, 17),
        (7, 3707, 40, 10),
        (9, 1000, 300, 64),
        (2, 600, 5, 512),
    ],
)
@pytest.mark.parametrize("draw", ["normal", "ties", "special"])
def test_torch_path_matches_reference(batch, items, width, k, draw):
    generator = torch.Generator().manual_seed(batch * 1000 + items + k)
    if draw == "ties":
        # Few distinct values, so ties cross the top-k cut in most rows.
        scores = torch.randint(0, 3, (batch, items), generator=generator).float()
    else:
        scores = torch.randn(batch, items, generator=generator)
    if draw == "special":
        scores[0, : min(items, 4)] = float("nan")
        scores[-1, : min(items, 3)] = float("-inf")
        scores[batch // 2, :1] = float("inf")
        scores[batch // 2, 1:2] = -0.0
    seen = torch.randint(-1, items + 2, (batch, width), generator=generator)
    exclude = torch.tensor([0])
    expected = masked_topk_reference(scores, seen, k, exclude)
    assert_same(masked_topk_torch(scores, seen, k, exclude), expected)
    assert_same(masked_topk(scores, seen, k, exclude, backend="torch"), expected)


def test_torch_path_every_item_seen():
    scores = torch.randn(3, 6)
    seen = torch.arange(6).repeat(3, 1)
    values, indices = masked_topk(scores, seen, 4, backend="torch")
    assert torch.all(indices == -1)
    assert torch.all(values == float("-inf"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_path_half_precision(dtype):
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(8, 500, generator=generator).to(dtype)
    seen = torch.randint(-1, 500, (8, 30), generator=generator)
    expected = masked_topk_reference(scores, seen, 20)
    assert_same(masked_topk(scores, seen, 20, backend="torch"), expected)


def test_torch_scores_path_matches_reference():
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randint(-2, 3, (6, 8), generator=generator).float()
    weights = torch.randint(-2, 3, (300, 8), generator=generator).float()
    seen = torch.randint(-1, 300, (6, 12), generator=generator)
    expected = masked_topk_scores_reference(hidden, weights, seen, 25)
    actual = masked_topk_scores(hidden, weights, seen, 25, backend="torch")
    assert_same(actual, expected)
