"""Input builders and comparisons shared by the kernel tests and the CUDA check.

tests/test_kernels.py and bench/topk_check.py build their inputs and compare the
Triton kernels with the PyTorch reference through these functions. The builders
draw on the device of the generator that they are given and return tensors on
``DEVICE``. A CPU generator therefore gives the same inputs on every machine,
and a CUDA generator draws large inputs on the GPU.

This module imports neither triton nor the Triton kernel module. That module
loads on the first kernel launch or the first call of topk.triton_interpreted(),
and TRITON_INTERPRET must be set before then.
"""

from __future__ import annotations

import torch

from . import topk
from .keys import decode_keys
from .reference import ineligible_mask

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

TopK = tuple[torch.Tensor, torch.Tensor]


class TopKMismatch(AssertionError):
    """A kernel result that differs from the reference."""


# ---------------------------------------------------------------------------
# Case tables

# (B, V, k, S) of random masked_topk cases: V = 1, k above V, S = 0, and k from
# 1 to 500 at catalog sizes up to the 3,707 movies of MovieLens-1M.
MASKED_TOPK_SHAPES = [
    (3, 1, 1, 0),
    (2, 1, 4, 1),
    (2, 3, 5, 2),
    (4, 3, 2, 2),
    (3, 3, 5, 0),
    (5, 3707, 10, 30),
    (7, 1000, 37, 13),
    (6, 3707, 1, 50),
    (3, 40, 64, 30),
    (2, 700, 500, 20),
]

# (B, V, D, k, S, dtype) of masked_topk_scores cases on small-integer inputs:
# V = 1, D = 1, k above V, k = 500, and 16-bit inputs.
FUSED_EXACT_SHAPES = [
    (3, 1, 8, 1, 0, torch.float32),
    (2, 3, 5, 4, 1, torch.float32),
    (4, 3707, 24, 10, 30, torch.float32),
    (33, 300, 40, 7, 10, torch.float32),
    (2, 700, 16, 500, 20, torch.float32),
    (3, 200, 1, 20, 5, torch.float32),
    (4, 500, 24, 10, 10, torch.bfloat16),
    (4, 500, 24, 10, 10, torch.float16),
]


# ---------------------------------------------------------------------------
# Inputs


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Create a random generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def ids(values, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Build an id tensor on ``DEVICE``."""
    return torch.tensor(values, dtype=dtype, device=DEVICE)


def _random_integers(low, high, size, generator: torch.Generator) -> torch.Tensor:
    """Draw integers in [low, high) on the generator's device."""
    return torch.randint(low, high, size, generator=generator, device=generator.device)


def random_scores(
    batch: int,
    num_items: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw a [B, V] matrix of standard normal scores, cast to ``dtype``."""
    scores = torch.randn(batch, num_items, generator=generator, device=generator.device)
    return scores.to(dtype).to(DEVICE)


def random_seen(
    batch: int, num_items: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw [B, S] seen ids in [-1, V), so -1 padding and duplicates both occur."""
    seen = _random_integers(-1, max(1, num_items), (batch, width), generator)
    return seen.to(DEVICE)


def integer_vectors(
    rows: int,
    width: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    span: int = 3,
) -> torch.Tensor:
    """Draw [rows, width] small integers in [-span, span], whose dot products are exact.

    Every partial sum is an integer far below 2**24, so the kernels' tiled
    accumulation and the reference's matmul give the same scores in any order,
    for fp32, bf16 and fp16 inputs alike. Small integers also make many ties.
    """
    values = _random_integers(-span, span + 1, (rows, width), generator)
    return values.to(dtype).to(DEVICE)


def normal_vectors(
    rows: int,
    width: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
) -> torch.Tensor:
    """Draw [rows, width] normal vectors with standard deviation ``scale``."""
    values = torch.randn(rows, width, generator=generator, device=generator.device)
    return (values * scale).to(dtype).to(DEVICE)


# ---------------------------------------------------------------------------
# Kernel launches with overrides


def masked_topk_kernel(scores, seen, k, exclude=None, **overrides) -> TopK:
    """Run the masked top-K kernel with tile, split or update-rule overrides.

    ``overrides`` (block_v, splits, max_extract) go to the kernel launch.
    """
    keys = topk._launch_masked_topk(scores, seen, k, exclude, **overrides)
    values, indices = decode_keys(keys)
    return values.to(scores.dtype), indices


def masked_topk_scores_kernel(
    hidden, item_weights, seen, k, exclude=None, **overrides
) -> TopK:
    """Run the fused matmul top-K kernel with tile, split or update-rule overrides.

    ``overrides`` (block_n, splits, max_extract) go to the kernel launch.
    """
    keys = topk._launch_fused_topk(hidden, item_weights, seen, k, exclude, **overrides)
    return decode_keys(keys)


# ---------------------------------------------------------------------------
# Comparisons


def assert_topk_equal(actual: TopK, expected: TopK) -> None:
    """Check that two (values, indices) results are identical, -inf included.

    Raises TopKMismatch that names the first differing row.
    """
    values, indices = actual
    expected_values, expected_indices = expected
    if indices.dtype != torch.int64:
        raise TopKMismatch(f"indices dtype {indices.dtype}, expected torch.int64")
    if values.dtype != expected_values.dtype:
        raise TopKMismatch(
            f"values dtype {values.dtype}, expected {expected_values.dtype}"
        )
    for name, tensor, reference in [
        ("values", values, expected_values),
        ("indices", indices, expected_indices),
    ]:
        if tensor.shape != reference.shape:
            raise TopKMismatch(
                f"{name} shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}"
            )
    index_differs = (indices != expected_indices).any(dim=1)
    value_differs = (values != expected_values).any(dim=1)
    wrong = index_differs | value_differs
    if bool(wrong.any()):
        row = int(wrong.nonzero()[0])
        raise TopKMismatch(
            f"{int(wrong.sum())} of {wrong.numel()} rows differ from the reference, "
            f"first row {row}: indices {indices[row, :8].tolist()} "
            f"values {values[row, :8].tolist()}, "
            f"expected {expected_indices[row, :8].tolist()} "
            f"{expected_values[row, :8].tolist()}"
        )


def assert_scores_topk_close(
    actual: TopK,
    expected: TopK,
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    seen: torch.Tensor,
    exclude: torch.Tensor | None = None,
    *,
    tolerance: float,
) -> None:
    """Check a fused top-k result whose scores may differ in the last bits of fp32.

    ``expected`` is the reference's top-(k + 1) for the same inputs. The kernel
    and the reference sum the same fp32 products in different orders. The
    products of 16-bit inputs are exact in fp32 too, so only the summation order
    differs. Values must agree within ``tolerance * (1 + |expected|)``. Indices
    must match wherever the reference's score is more than 10 tolerances from
    both neighbours in its ranking, and more than half of the slots must be that
    well separated. Every returned item must be eligible, appear once in its row
    and score the reported value. Raises TopKMismatch on the first failed check.
    """
    values, indices = actual
    expected_values, expected_indices = expected
    batch = hidden.shape[0]
    k = expected_indices.shape[1] - 1
    if values.dtype != torch.float32 or indices.dtype != torch.int64:
        raise TopKMismatch(
            f"got {values.dtype} values and {indices.dtype} indices, "
            "expected torch.float32 and torch.int64"
        )
    if values.shape != (batch, k) or indices.shape != (batch, k):
        raise TopKMismatch(
            f"got values of shape {tuple(values.shape)} and indices of shape "
            f"{tuple(indices.shape)}, expected {(batch, k)}"
        )

    top_values = expected_values[:, :k]
    top_indices = expected_indices[:, :k]
    error = (values - top_values).abs()
    # Equal infinities are close although their difference is NaN, and a NaN
    # value is never close.
    close = (values == top_values) | (error <= tolerance * (1 + top_values.abs()))
    if not bool(close.all()):
        row, slot = (int(index) for index in (~close).nonzero()[0])
        raise TopKMismatch(
            f"{int((~close).sum())} values are NaN or differ from the reference by "
            f"more than the tolerance {tolerance:g}, first row {row} slot {slot}: "
            f"{float(values[row, slot])}, expected {float(top_values[row, slot])}"
        )
    missing = indices < 0
    if not torch.equal(missing, top_indices < 0):
        raise TopKMismatch("the kernel returned -1 in other slots than the reference")

    gaps = expected_values[:, :-1] - expected_values[:, 1:]  # [B, k]
    first = torch.full_like(gaps[:, :1], float("inf"))
    before = torch.cat([first, gaps[:, :-1]], dim=1)
    separated = torch.minimum(before, gaps) > 10 * tolerance
    if separated.numel() and float(separated.float().mean()) <= 0.5:
        raise TopKMismatch(
            f"only {int(separated.sum())} of {separated.numel()} slots are well "
            "separated, expected more than half so that the index check covers most "
            "slots"
        )
    wrong = separated & (indices != top_indices)
    if bool(wrong.any()):
        raise TopKMismatch(
            f"{int(wrong.sum())} well-separated slots hold other items "
            f"(of {int(separated.sum())} well-separated)"
        )

    items = indices.clamp(min=0)
    blocked = ineligible_mask(seen, exclude, item_weights.shape[0])
    if bool((blocked.gather(1, items) & ~missing).any()):
        raise TopKMismatch("a seen or excluded item was returned")
    ordered = indices.sort(dim=1).values
    if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()):
        raise TopKMismatch("an item was returned twice in one row")
    # Score only the returned items, because a full [B, V] fp32 score matrix at
    # B = 4,096 and V = 1,000,000 would take 16 GB.
    item_scores = torch.einsum(
        "bd,bkd->bk", hidden.float(), item_weights[items].float()
    )
    scored = missing | (
        (item_scores - values).abs() <= tolerance * (1 + item_scores.abs())
    )
    if not bool(scored.all()):
        raise TopKMismatch("a returned value differs from its item's score")
