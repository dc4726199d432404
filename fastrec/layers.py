"""Dropout and attention with fast paths for the small shapes of a CPU step.

On a GPU both defer to PyTorch (``F.dropout`` and ``scaled_dot_product_attention``).
On the CPU two parts of a small model's step cost more than its matrix products,
and each gets its own path:

- Dropout. ``F.dropout`` draws one 32-bit Mersenne Twister number per element, and
  under torch.compile the CPU draws run a Philox generator per element. Here one
  64-bit draw gives four 15-bit words (``random_words``), and an element is kept
  when its word is at least ``round(p * 2**15)``. The drop probability is thus p
  rounded to a multiple of 2**-15, and kept values are scaled so that the
  expectation stays exact.
- Attention over short windows (T <= ``SHORT_WINDOW``). The fused CPU kernel of
  scaled_dot_product_attention is tuned for long sequences; at T = 5 with 8-wide
  heads the explicit product, mask and softmax run faster, and under torch.compile
  the broadcast form fuses into a few loops.

Shapes: B batch, H heads, T positions, E head width, N elements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Random bits per dropout word, and the word scale.
WORD_BITS = 15
WORD_RANGE = 1 << WORD_BITS
# Longest window that takes the explicit attention path on the CPU.
SHORT_WINDOW = 16


@torch.library.custom_op("fastrec::random_words", mutates_args=())
def random_words(n: int) -> Tensor:
    """Return n uniform random integers in [0, 2**15) as int16 [N].

    The words come from the default CPU generator (seeded by ``torch.manual_seed``),
    four per 64-bit draw. As a custom operator it stays one opaque call under
    torch.compile, which would otherwise generate every element with its own
    Philox rounds.
    """
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    return draws.view(torch.int16)[:n] & (WORD_RANGE - 1)


@random_words.register_fake
def _random_words_fake(n: int) -> Tensor:
    return torch.empty(n, dtype=torch.int16)


def keep_threshold(p: float) -> int:
    """Return the smallest kept word for drop probability p: round(p * 2**15)."""
    return round(p * WORD_RANGE)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero elements of x with probability p and scale the rest (see module doc).

    On CUDA this is ``F.dropout``. On the CPU the drop probability is p rounded to
    a multiple of 2**-15; a p that rounds to 1 drops everything.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    threshold = keep_threshold(p)
    if threshold >= WORD_RANGE:
        return x * 0.0
    scale = WORD_RANGE / (WORD_RANGE - threshold)
    words = random_words(x.numel()).view(x.shape)
    return x * torch.where(words >= threshold, scale, 0.0).to(x.dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` with the CPU fast path of :func:`dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout_p: float
) -> Tensor:
    """Attend q, k, v [B, H, T, E] under the boolean mask [B, 1, T, T] (True attends).

    ``dropout_p`` drops attention weights (pass 0 outside training). Every query
    must attend to at least one key. Returns [B, H, T, E].
    """
    T = q.shape[2]
    if q.device.type != "cpu" or T > SHORT_WINDOW:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p
        )
    scale = 1.0 / math.sqrt(q.shape[-1])
    if torch.compiler.is_compiling():
        # [B, H, Tq, Tk, E] products summed over E: a few fused loops once compiled.
        scores = (q[:, :, :, None, :] * k[:, :, None, :, :]).sum(-1) * scale
    else:
        scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, T]
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    weights = dropout(weights, dropout_p, dropout_p > 0.0)
    if torch.compiler.is_compiling():
        return (weights[..., None] * v[:, :, None, :, :]).sum(3)
    return weights @ v  # [B, H, T, E]
