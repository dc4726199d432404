"""Int64 sort keys that order candidates by (score descending, item id ascending).

Shape legend: B batch rows, K top-k slots.

Key layout (shared with the Triton kernels in triton_topk.py): the high 32 bits are
an order-preserving int32 code of the fp32 score, the low 32 bits are
``0xFFFFFFFF - item_id``. NaN is coded as -inf and -0.0 as +0.0. ``KEY_EMPTY``
(INT64_MIN) marks an ineligible item or an empty top-K slot; its score code,
INT32_MIN, is below the code of -inf, so no score maps to it.
"""

from __future__ import annotations

import torch

KEY_EMPTY = -(2**63)
_CODE_EMPTY = -(2**31)
_LOW_MASK = 0xFFFFFFFF
_MAGNITUDE_MASK = 0x7FFFFFFF


def encode_keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Encode float scores and item ids (< 2**32) as int64 keys.

    Both tensors broadcast against each other. Scores are converted to fp32 first.
    """
    values = scores.to(torch.float32)
    values = torch.where(torch.isnan(values), float("-inf"), values)
    values = torch.where(values == 0.0, 0.0, values)
    bits = values.view(torch.int32)
    code = torch.where(bits < 0, bits ^ _MAGNITUDE_MASK, bits).to(torch.int64)
    return (code << 32) | (_LOW_MASK - ids.to(torch.int64))


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode int64 keys into (fp32 values, int64 item ids).

    Empty keys (any key whose score code is INT32_MIN) decode to value -inf and
    id -1.
    """
    code = keys >> 32  # arithmetic shift: the signed score code
    empty = code == _CODE_EMPTY
    bits = torch.where(code < 0, code ^ _MAGNITUDE_MASK, code).to(torch.int32)
    values = bits.view(torch.float32)
    values = values.masked_fill(empty, float("-inf"))
    ids = _LOW_MASK - (keys & _LOW_MASK)
    ids = ids.masked_fill(empty, -1)
    return values, ids
