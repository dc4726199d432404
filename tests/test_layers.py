"""Tests of fastrec.layers: the CPU dropout and the short-window attention path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastrec.layers import (
    SHORT_WINDOW,
    WORD_RANGE,
    Dropout,
    attention,
    dropout,
    keep_threshold,
    random_words,
)
from fastrec.model import causal_padding_mask


def test_random_words_range_and_spread():
    torch.manual_seed(0)
    words = random_words(torch.empty(400_003))
    assert words.dtype == torch.int16
    assert words.shape == (400_003,)
    assert int(words.min()) >= 0
    assert int(words.max()) < WORD_RANGE
    # Each of 16 equal bins of [0, 2**15) contains 1/16 of the words, within 2%.
    counts = torch.bincount(words.long() // (WORD_RANGE // 16), minlength=16)
    expected = len(words) / 16
    assert ((counts - expected).abs() / expected).max() < 0.02
    # All 15 bits vary, the top one included.
    assert all(bool(((words >> bit) & 1).any()) for bit in range(15))


def test_random_words_follow_the_seed():
    torch.manual_seed(3)
    like = torch.empty(10, 100)
    first = random_words(like)
    torch.manual_seed(3)
    again = random_words(like)
    other = random_words(like)
    assert first.shape == (10, 100)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_rate_and_scale(p: float):
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, p, training=True)
    threshold = keep_threshold(p)
    scale = WORD_RANGE / (WORD_RANGE - threshold)
    survivors = y != 0
    assert torch.allclose(y[survivors], torch.full_like(y[survivors], scale))
    assert abs(1.0 - float(survivors.float().mean()) - threshold / WORD_RANGE) < 0.005
    # The expectation of each element is unchanged.
    assert abs(float(y.mean()) - 1.0) < 0.02


def test_random_words_of_nothing():
    assert random_words(torch.empty(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_rejects_invalid_p(p: float):
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(torch.ones(3), p, training=True)


def test_dropout_off_returns_input():
    x = torch.randn(7, 3)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    module = Dropout(0.3).eval()
    assert module(x) is x


def test_dropout_gradient_uses_the_forward_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    y.sum().backward()
    scale = WORD_RANGE / (WORD_RANGE - keep_threshold(0.25))
    assert torch.equal(x.grad, (y != 0).float() * scale)


def test_dropout_keeps_dtype_and_shape():
    x = torch.randn(5, 4, 3, dtype=torch.bfloat16)
    y = dropout(x, 0.5, training=True)
    assert y.dtype == torch.bfloat16
    assert y.shape == x.shape


def test_compiled_dropout_gradient_uses_the_forward_mask():
    torch.manual_seed(2)

    def f(x: torch.Tensor) -> torch.Tensor:
        return dropout(x * 2.0, 0.2, training=True)

    # Inductor, whose partitioner could recompute a random op in the backward.
    compiled = torch.compile(f)
    x = torch.randn(300, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    scale = WORD_RANGE / (WORD_RANGE - keep_threshold(0.2))
    assert torch.equal(x.grad, (y != 0).float() * 2.0 * scale)
    assert 0.1 < float((y == 0).float().mean()) < 0.3


def test_compiled_dropouts_draw_their_own_masks():
    """Two dropouts of equal shape in one training graph get different masks."""
    torch.manual_seed(4)

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dropout(x * 2.0, 0.5, True), dropout(x * 3.0, 0.5, True)

    x = torch.randn(64, 64, requires_grad=True)
    first, second = torch.compile(f, backend="aot_eager")(x)
    assert not torch.equal(first != 0, second != 0)


def sdpa_reference(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def padded_items(batch: int, length: int, seed: int) -> torch.Tensor:
    """Left-padded item rows of random real lengths 1..length."""
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 50, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    slots = torch.arange(length)[None, :]
    return torch.where(slots >= length - lengths[:, None], items, 0)


@pytest.mark.parametrize("length", [1, 2, 5, 7, SHORT_WINDOW, SHORT_WINDOW + 3])
@pytest.mark.parametrize("compiled", [False, True])
def test_attention_matches_sdpa(length: int, compiled: bool):
    torch.manual_seed(length)
    B, H, E = 6, 3, 5
    q, k, v = (torch.randn(B, H, length, E, requires_grad=True) for _ in range(3))
    mask = causal_padding_mask(padded_items(B, length, seed=length))

    def run(q, k, v, mask):
        return attention(q, k, v, mask, dropout_p=0.0)

    fn = torch.compile(run, backend="aot_eager") if compiled else run
    y = fn(q, k, v, mask)
    y.square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    expected = sdpa_reference(q, k, v, mask)
    expected.square().sum().backward()
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    for got, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad, atol=1e-5, rtol=1e-5)


def test_attention_dropout_zeroes_some_weights():
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 5, 3) for _ in range(3))
    v = torch.ones_like(v)
    mask = causal_padding_mask(torch.ones(4, 5, dtype=torch.long))
    y = attention(q, k, v, mask, dropout_p=0.5)
    # With all-ones values each output is the sum of the kept, rescaled weights,
    # so dropping changes it away from exactly 1.
    assert not torch.allclose(y, torch.ones_like(y))
    assert torch.allclose(attention(q, k, v, mask, dropout_p=0.0), torch.ones_like(y))
