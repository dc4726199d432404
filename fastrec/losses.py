"""Cross-entropy over the full catalog without materializing the [N, V] logits.

``linear_cross_entropy(features, weight, targets)`` equals
``cross_entropy(features @ weight.T, targets)`` with target 0 ignored, but it works
through the rows in chunks: each chunk's logits are computed, turned into the loss
and the gradients of ``features`` and ``weight`` at once, and dropped. The chunk
stays in cache on a CPU and the peak memory stays at one chunk of logits, so the
output layer, which dominates the step of a small recommender (V = 3,707 columns
against D = 64), runs several times faster than the plain path on the CPU.

Shapes: N rows (B * T positions), D feature width, V catalog rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Logit elements per chunk: about 4 MiB of fp32 on the CPU, 256 MiB on a GPU.
CPU_CHUNK_ELEMENTS = 1 << 20
GPU_CHUNK_ELEMENTS = 1 << 26


def chunk_rows(n_rows: int, n_columns: int, device: torch.device) -> int:
    """Return the number of rows per chunk for a [n_rows, n_columns] logit matrix."""
    budget = GPU_CHUNK_ELEMENTS if device.type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, min(n_rows, budget // max(1, n_columns)))


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and both gradients in one pass over the rows; backward only scales them."""

    @staticmethod
    def forward(
        ctx,
        features: Tensor,
        weight: Tensor,
        targets: Tensor,
        row_weights: Tensor,
        compute_dtype: torch.dtype,
    ) -> Tensor:
        n = features.shape[0]
        total = row_weights.sum().clamp_min(torch.finfo(torch.float32).tiny)
        scale = row_weights / total  # [N]
        w = weight.to(compute_dtype)  # [V, D]
        grad_features = torch.empty_like(features, dtype=torch.float32)  # [N, D]
        grad_weight = torch.zeros(
            weight.shape, dtype=torch.float32, device=weight.device
        )
        loss = torch.zeros((), dtype=torch.float32, device=features.device)
        step = chunk_rows(n, weight.shape[0], features.device)
        for start in range(0, n, step):
            stop = min(start + step, n)
            x = features[start:stop].to(compute_dtype)  # [c, D]
            logits = (x @ w.T).float()  # [c, V]
            t = targets[start:stop]
            picked = logits.gather(1, t[:, None]).squeeze(1)  # [c]
            # One exp pass gives both the log-sum-exp and the softmax.
            peak = logits.amax(dim=1, keepdim=True)  # [c, 1]
            exp = logits.sub_(peak).exp_()  # [c, V], reusing the logit buffer
            total_exp = exp.sum(dim=1, keepdim=True)  # [c, 1]
            lse = peak + total_exp.log()  # [c, 1]
            row_scale = scale[start:stop, None]  # [c, 1]
            loss += ((lse[:, 0] - picked) * row_scale[:, 0]).sum()

            # d loss / d logits = (softmax - onehot) * scale.
            grad = exp.mul_(row_scale / total_exp)  # [c, V]
            grad.scatter_add_(1, t[:, None], -row_scale)
            grad = grad.to(compute_dtype)
            grad_features[start:stop] = (grad @ w).float()  # [c, D]
            grad_weight += (grad.T @ x).float()  # [V, D]
        ctx.save_for_backward(grad_features, grad_weight)
        ctx.feature_dtype = features.dtype
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_features, grad_weight = ctx.saved_tensors
        grad_features = (grad_features * grad_output).to(ctx.feature_dtype)
        grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_features, grad_weight, None, None, None


@torch.compiler.disable
def linear_cross_entropy(
    features: Tensor,
    weight: Tensor,
    targets: Tensor,
    row_weights: Tensor | None = None,
) -> Tensor:
    """Return the weighted mean cross-entropy of ``features @ weight.T`` against targets.

    ``features`` is [..., D], ``weight`` [V, D] and ``targets`` [...] (0 is padding
    and adds nothing). ``row_weights`` optionally scales each target's loss. The
    result is the weighted sum over max(weight sum, tiny), as in
    ``fastrec.model.sequence_loss``, and the softmax runs in fp32. Under autocast the
    two matrix products run in the autocast dtype. No host sync on a GPU. torch.compile does
    not trace it: the chunk loop would unroll into a very large graph.
    """
    width = features.shape[-1]
    flat = features.reshape(-1, width)  # [N, D]
    flat_targets = targets.reshape(-1).long()  # [N]
    real = (flat_targets != 0).float()
    if row_weights is not None:
        real = real * row_weights.reshape(-1).float()
    if flat.device.type == "cpu":
        # Padded positions add nothing, and on the CPU dropping them first saves
        # their share of the output layer (often a third of a loo batch). On a GPU
        # the row count would have to be read back to the host, so they stay.
        keep = real.nonzero().squeeze(1)  # [N']
        flat, flat_targets, real = flat[keep], flat_targets[keep], real[keep]
    if torch.is_autocast_enabled(features.device.type):
        compute_dtype = torch.get_autocast_dtype(features.device.type)
    else:
        compute_dtype = torch.float32
    with torch.autocast(features.device.type, enabled=False):
        return _LinearCrossEntropy.apply(
            flat, weight, flat_targets, real, compute_dtype
        )
