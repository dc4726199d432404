"""The fast PyTorch top-K path against the sort-based reference."""

from __future__ import annotations

import pytest
import torch

from fastrec.kernels import masked_topk, masked_topk_reference, masked_topk_scores
from fastrec.kernels.reference import masked_topk_scores_reference
from fastrec.kernels.select import masked_topk_torch
from fastrec.kernels.testing import (
    MASKED_TOPK_SHAPES,
    assert_topk_equal,
    integer_vectors,
    random_scores,
    random_seen,
    seeded_generator,
)

# (B, V, k, S) beyond the shared table: k equal to V, and k = 512 on a short row.
EXTRA_SHAPES = [(6, 17, 17, 4), (2, 600, 512, 5)]


@pytest.mark.parametrize("batch, items, k, width", MASKED_TOPK_SHAPES + EXTRA_SHAPES)
@pytest.mark.parametrize("draw", ["normal", "ties", "special"])
def test_torch_path_matches_reference(batch, items, k, width, draw):
    generator = seeded_generator(batch * 1000 + items + k)
    if draw == "ties":
        # Few distinct values, so ties cross the top-k cut in most rows.
        scores = integer_vectors(batch, items, generator, span=1)
    else:
        scores = random_scores(batch, items, generator)
    if draw == "special":
        scores[0, : min(items, 4)] = float("nan")
        scores[-1, : min(items, 3)] = float("-inf")
        scores[batch // 2, :1] = float("inf")
        scores[batch // 2, 1:2] = -0.0
    seen = random_seen(batch, items + 2, width, generator)
    exclude = torch.tensor([0], device=scores.device)
    expected = masked_topk_reference(scores, seen, k, exclude)
    assert_topk_equal(masked_topk_torch(scores, seen, k, exclude), expected)
    assert_topk_equal(masked_topk(scores, seen, k, exclude, backend="torch"), expected)


def test_torch_path_every_item_seen():
    scores = torch.randn(3, 6)
    seen = torch.arange(6).repeat(3, 1)
    values, indices = masked_topk(scores, seen, 4, backend="torch")
    assert torch.all(indices == -1)
    assert torch.all(values == float("-inf"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_path_half_precision(dtype):
    generator = seeded_generator(3)
    scores = random_scores(8, 500, generator, dtype=dtype)
    seen = random_seen(8, 500, 30, generator)
    expected = masked_topk_reference(scores, seen, 20)
    assert_topk_equal(masked_topk(scores, seen, 20, backend="torch"), expected)


def test_torch_scores_path_matches_reference():
    generator = seeded_generator(4)
    hidden = integer_vectors(6, 8, generator, span=2)
    weights = integer_vectors(300, 8, generator, span=2)
    seen = random_seen(6, 300, 12, generator)
    expected = masked_topk_scores_reference(hidden, weights, seen, 25)
    actual = masked_topk_scores(hidden, weights, seen, 25, backend="torch")
    assert_topk_equal(actual, expected)


def test_torch_path_scores_that_need_gradients():
    generator = seeded_generator(5)
    scores = random_scores(4, 50, generator).requires_grad_()
    seen = random_seen(4, 50, 6, generator)
    expected = masked_topk_reference(scores.detach(), seen, 7)
    values, indices = masked_topk(scores, seen, 7, backend="torch")
    assert_topk_equal((values.detach(), indices), expected)
    # The picked values carry the gradient back to their scores.
    values.sum().backward()
    assert int(scores.grad.sum()) == 4 * 7
