"""Evaluation kernels: seen-item-masked top-K in Triton with a PyTorch reference.

``masked_topk`` selects the top-k unseen items from a [B, V] score matrix, and
``masked_topk_scores`` computes the scores from hidden states and item vectors
inside the kernel without materializing them. Both run Triton on CUDA tensors and
an exact PyTorch path on CPU tensors unless ``backend`` selects otherwise.
"""

from __future__ import annotations

from .reference import masked_topk_reference, masked_topk_scores_reference
from .topk import masked_topk, masked_topk_scores

__all__ = [
    "masked_topk",
    "masked_topk_reference",
    "masked_topk_scores",
    "masked_topk_scores_reference",
]
