"""Dropout and attention with fast paths for the small shapes of a CPU step.

On a GPU both defer to PyTorch (``F.dropout`` and ``scaled_dot_product_attention``).
On the CPU two parts of a small model's step cost more than its matrix products,
and each gets its own path:

- Dropout. ``F.dropout`` draws one random number per element from the default
  generator, and under torch.compile the CPU draws run Philox rounds per element. Here one
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
# Maximum window length that takes the explicit attention path on the CPU.
SHORT_WINDOW = 16


@torch.library.custom_op(
    "fastrec::random_words",
    mutates_args=(),
    tags=(torch.Tag.nondeterministic_seeded,),
)
def random_words(like: Tensor) -> Tensor:
    """Return uniform random integers in [0, 2**15) as int16 of the shape of ``like``.

    Only the shape of ``like`` is read. The words come from the default CPU
    generator (seeded by ``torch.manual_seed``), four per 64-bit draw. As a custom
    operator it stays one opaque call under torch.compile, which would otherwise
    generate every element with its own Philox rounds.
    """
    n = like.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    words = draws.view(torch.int16)[:n] & (WORD_RANGE - 1)
    return words.view(like.shape)


@random_words.register_fake
def _random_words_fake(like: Tensor) -> Tensor:
    return torch.empty(like.shape, dtype=torch.int16)


def keep_threshold(p: float) -> int:
    """Return the smallest kept word for drop probability p: round(p * 2**15)."""
    return round(p * WORD_RANGE)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero elements of x with probability p and scale the rest (see module doc).

    On CUDA this is ``F.dropout``. On the CPU the drop probability is p rounded to
    a multiple of 2**-15, and a p that rounds to 1 drops everything. Raises
    ValueError for p outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is invalid: expected 0 <= p <= 1")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    threshold = keep_threshold(p)
    if threshold >= WORD_RANGE:
        return x * 0.0
    scale = WORD_RANGE / (WORD_RANGE - threshold)
    # NOTE: the tensor itself is the operator's input, so that torch.compile's
    # common-subexpression pass cannot merge the draws of two dropouts of the same
    # shape (it skips only built-in random ops). Two dropouts of the very same
    # tensor in one compiled graph would still share their mask.
    words = random_words(x.detach())
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
    must attend to at least one key: without one, the explicit CPU path returns NaN
    where scaled_dot_product_attention returns 0. Returns [B, H, T, E].
    """
    T = q.shape[2]
    if q.device.type != "cpu" or T > SHORT_WINDOW:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p
        )
    scale = 1.0 / math.sqrt(q.shape[-1])
    # Once compiled, [B, H, Tq, Tk, E] products summed over E fuse into a few loops.
    broadcast = torch.compiler.is_compiling()
    if broadcast:
        scores = (q[:, :, :, None, :] * k[:, :, None, :, :]).sum(-1) * scale
    else:
        scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, T]
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    weights = dropout(weights, dropout_p, dropout_p > 0.0)
    if broadcast:
        return (weights[..., None] * v[:, :, None, :, :]).sum(3)
    return weights @ v  # [B, H, T, E]
