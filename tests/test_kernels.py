"""Tests of the seen-item-masked top-K kernels in fastrec.kernels.

The Triton kernels run on CUDA when a device is present and otherwise in the
Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1). They are compared
with the PyTorch reference, and the reference itself is compared with a plain
Python loop over every item. Interpreted kernels are slow, so most cases are small
and a few override the tile size, the catalog split or the tile-update rule to
reach the kernels' boundaries at small sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fastrec.kernels import (
    masked_topk,
    masked_topk_reference,
    masked_topk_scores,
    masked_topk_scores_reference,
    topk,
)
from fastrec.kernels.keys import decode_keys, encode_keys
from fastrec.kernels.testing import (
    DEVICE,
    FUSED_EXACT_SHAPES,
    MASKED_TOPK_SHAPES,
    assert_scores_topk_close,
    assert_topk_equal,
    ids,
    integer_vectors,
    masked_topk_kernel,
    masked_topk_scores_kernel,
    normal_vectors,
    random_scores,
    random_seen,
)

INF = float("inf")
NAN = float("nan")

# Overrides that force each tile-update rule of the kernels: max_extract=0 merges
# every improving tile with sorting networks, and a huge max_extract moves every
# candidate into the running top-K one at a time. Tiles of 16 items and 3 catalog
# splits put tile and split boundaries inside small catalogs.
UPDATE_RULES = {
    "bitonic": {"max_extract": 0},
    "extract": {"max_extract": 1 << 20},
}


@pytest.fixture(scope="module", autouse=True)
def triton_runs_here():
    """Fail clearly when the kernels could only run on CUDA and there is none."""
    if DEVICE.type == "cpu" and not topk.triton_interpreted():
        pytest.fail(
            "the Triton kernels were built without the interpreter on a machine "
            "without CUDA; run pytest from the repository so that tests/conftest.py "
            "sets TRITON_INTERPRET=1 (an explicit TRITON_INTERPRET=0 prevents that)"
        )


# ---------------------------------------------------------------------------
# Helpers


def brute_force_topk(
    scores: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank every eligible item of every row with a Python sort.

    Returns (values [B, k] float64, indices [B, k] int64) with the documented
    rules written out directly: NaN ranks as -inf, ties go to the lower id and
    missing slots hold -1 and -inf.
    """
    values = scores.to(torch.float32).cpu().numpy().astype(np.float64)
    batch, num_items = values.shape
    excluded = set() if exclude is None else set(exclude.cpu().tolist())
    top_values = np.full((batch, k), -np.inf)
    top_indices = np.full((batch, k), -1, dtype=np.int64)
    for row in range(batch):
        blocked = excluded | set(seen[row].cpu().tolist())
        ranked = []
        for item in range(num_items):
            if item in blocked:
                continue
            value = values[row, item]
            if math.isnan(value):
                value = -math.inf
            ranked.append((-value, item))
        ranked.sort()
        for slot, (negative, item) in enumerate(ranked[:k]):
            top_values[row, slot] = -negative
            top_indices[row, slot] = item
    return top_values, top_indices


def check_both_backends(scores, seen, k, exclude=None):
    """Compare the Triton backend of masked_topk with the torch backend.

    Returns the Triton backend's (values, indices) for further checks.
    """
    expected = masked_topk(scores, seen, k, exclude=exclude, backend="torch")
    actual = masked_topk(scores, seen, k, exclude=exclude, backend="triton")
    assert_topk_equal(actual, expected)
    return actual


# ---------------------------------------------------------------------------
# The reference against a Python loop


def reference_cases():
    """Yield (name, scores, seen, k, exclude) small cases for the brute force."""
    generator = torch.Generator().manual_seed(11)
    tied = torch.randint(0, 3, (4, 9), generator=generator).float()
    yield "ties", tied, random_seen(4, 9, 3, generator), 5, None
    special = torch.tensor(
        [
            [NAN, INF, -INF, 1.0, NAN, INF, 0.0, -0.0],
            [NAN] * 8,
            [-INF] * 8,
            [-0.0, 0.0, -0.0, 0.0, 2.0, 2.0, NAN, -INF],
        ]
    )
    yield "nan_inf", special, ids([[1], [-1], [0], [4]]), 8, None
    yield "k_over_v", torch.randn(3, 4, generator=generator), ids([[0, 0]] * 3), 7, None
    yield "v1", torch.randn(2, 1, generator=generator), ids([[0], [-1]]), 2, None
    yield "s0", torch.randn(3, 6, generator=generator), ids([[], [], []]), 4, None
    odd_seen = ids([[3, 3, -1, -5, 99], [6, 0, 0, 2**40, -1]])
    yield "odd_seen", torch.randn(2, 6, generator=generator), odd_seen, 6, None
    exclude = ids([0, 2, 2, -4, 50])
    yield "exclude", torch.randn(3, 7, generator=generator), ids([[1]] * 3), 7, exclude
    all_seen = ids([[0, 1, 2, 3, 4]] * 2)
    yield "all_seen", torch.randn(2, 5, generator=generator), all_seen, 3, None
    half = torch.randn(3, 11, generator=generator).to(torch.bfloat16)
    yield "bf16", half, random_seen(3, 11, 4, generator), 6, None


@pytest.mark.parametrize("case", list(reference_cases()), ids=lambda case: case[0])
def test_reference_matches_brute_force(case):
    _, scores, seen, k, exclude = case
    scores = scores.to(DEVICE)
    values, indices = masked_topk_reference(scores, seen, k, exclude)
    expected_values, expected_indices = brute_force_topk(scores, seen, k, exclude)
    assert values.dtype == scores.dtype
    assert indices.dtype == torch.int64
    np.testing.assert_array_equal(indices.cpu().numpy(), expected_indices)
    np.testing.assert_array_equal(values.float().cpu().numpy(), expected_values)


def test_reference_random_matches_brute_force():
    generator = torch.Generator().manual_seed(12)
    for trial in range(20):
        batch = int(torch.randint(1, 5, (1,), generator=generator))
        num_items = int(torch.randint(1, 40, (1,), generator=generator))
        width = int(torch.randint(0, 12, (1,), generator=generator))
        k = int(torch.randint(1, 45, (1,), generator=generator))
        scores = torch.randint(-2, 3, (batch, num_items), generator=generator).float()
        seen = random_seen(batch, num_items, width, generator)
        exclude = torch.randint(-1, num_items + 1, (2,), generator=generator)
        values, indices = masked_topk_reference(scores.to(DEVICE), seen, k, exclude)
        expected_values, expected_indices = brute_force_topk(scores, seen, k, exclude)
        np.testing.assert_array_equal(
            indices.cpu().numpy(), expected_indices, err_msg=f"trial {trial}"
        )
        np.testing.assert_array_equal(
            values.cpu().numpy(), expected_values, err_msg=f"trial {trial}"
        )


def test_reference_scores_match_brute_force():
    generator = torch.Generator().manual_seed(13)
    hidden = integer_vectors(3, 5, generator)
    weights = integer_vectors(10, 5, generator)
    seen = random_seen(3, 10, 3, generator)
    values, indices = masked_topk_scores_reference(hidden, weights, seen, 6, ids([0]))
    scores = hidden.cpu().double() @ weights.cpu().double().T
    expected_values, expected_indices = brute_force_topk(scores, seen, 6, ids([0]))
    assert values.dtype == torch.float32
    np.testing.assert_array_equal(indices.cpu().numpy(), expected_indices)
    np.testing.assert_array_equal(values.cpu().numpy(), expected_values)


def test_keys_round_trip():
    scores = torch.tensor([-INF, -3.5, -0.0, 0.0, 1e-38, 2.0, INF, NAN])
    item_ids = torch.tensor([0, 5, 2, 1, 7, 2**31 - 2, 3, 4])
    values, decoded_ids = decode_keys(encode_keys(scores, item_ids))
    expected = torch.tensor([-INF, -3.5, 0.0, 0.0, 1e-38, 2.0, INF, -INF])
    assert torch.equal(decoded_ids, item_ids)
    torch.testing.assert_close(values, expected, rtol=0, atol=0)


def test_keys_order_by_score_then_id():
    scores = torch.tensor([1.0, 1.0, -0.0, 0.0, -1.0, -INF, NAN, 2.0])
    item_ids = torch.tensor([3, 9, 4, 2, 0, 1, 0, 8])
    keys = encode_keys(scores, item_ids)
    order = torch.argsort(keys, descending=True)
    # Score descending, then id ascending: NaN ranks as -inf and -0.0 as +0.0.
    assert item_ids[order].tolist() == [8, 3, 9, 2, 4, 0, 0, 1]


# ---------------------------------------------------------------------------
# masked_topk: the kernel against the reference


@pytest.mark.parametrize(("batch", "num_items", "k", "width"), MASKED_TOPK_SHAPES)
def test_masked_topk_random(batch, num_items, k, width):
    generator = torch.Generator().manual_seed(batch * 10_000 + num_items + k)
    scores = random_scores(batch, num_items, generator)
    seen = random_seen(batch, num_items, width, generator)
    check_both_backends(scores, seen, k)


@pytest.mark.parametrize("rule", sorted(UPDATE_RULES))
@pytest.mark.parametrize("splits", [1, 3])
def test_masked_topk_ties_across_tiles(rule, splits):
    generator = torch.Generator().manual_seed(21)
    # Row 0 is all equal, row 1 takes three values, row 2 gets better tile by tile.
    scores = torch.zeros(3, 150)
    scores[1] = torch.randint(0, 3, (150,), generator=generator).float()
    scores[2] = torch.arange(150).float() // 20
    scores = scores.to(DEVICE)
    seen = random_seen(3, 150, 12, generator)
    # k = 1 keeps 16-item tiles, and k = 33 pads the running top-K to 64 slots.
    for k in (1, 33):
        expected = masked_topk_reference(scores, seen, k)
        overrides = {"block_v": 16, "splits": splits, **UPDATE_RULES[rule]}
        actual = masked_topk_kernel(scores, seen, k, **overrides)
        assert_topk_equal(actual, expected)


def test_masked_topk_all_equal_default_tiles():
    scores = torch.full((2, 3707), 0.25, device=DEVICE)
    seen = ids([[0, 1, 5, -1], [2, 3, 3, 1100]])
    _, indices = check_both_backends(scores, seen, 10)
    assert indices[0].tolist() == [2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    check_both_backends(scores, seen, 300)


def test_masked_topk_signed_zeros_tie():
    scores = torch.tensor([[-0.0, 0.0, -0.0, 0.0, -1.0]], device=DEVICE)
    values, indices = masked_topk(scores, ids([[2]]), 5, backend="triton")
    assert indices.tolist() == [[0, 1, 3, 4, -1]]
    assert values.tolist() == [[0.0, 0.0, 0.0, -1.0, -INF]]


def test_masked_topk_nan_and_inf():
    scores = torch.tensor(
        [
            [NAN, INF, -INF, 1.0, NAN, INF],
            [NAN] * 6,
            [-INF] * 6,
            [INF, NAN, -INF, INF, 3.0, NAN],
        ],
        device=DEVICE,
    )
    seen = ids([[5], [-1], [0], [3]])
    values, indices = check_both_backends(scores, seen, 6)
    # NaN items rank as -inf, below finite scores, and come back with value -inf.
    assert indices[0].tolist() == [1, 3, 0, 2, 4, -1]
    assert indices[1].tolist() == [0, 1, 2, 3, 4, 5]
    assert values[1].tolist() == [-INF] * 6
    assert indices[2].tolist() == [1, 2, 3, 4, 5, -1]
    assert indices[3].tolist() == [0, 4, 1, 2, 5, -1]
    assert not torch.isnan(values).any()


@pytest.mark.parametrize("rule", sorted(UPDATE_RULES))
def test_masked_topk_nan_and_inf_across_tiles(rule):
    generator = torch.Generator().manual_seed(22)
    scores = torch.randn(3, 200, generator=generator)
    special = torch.tensor([NAN, INF, -INF])
    pick = torch.randint(0, 3, (3, 200), generator=generator)
    chosen = torch.rand(3, 200, generator=generator) < 0.4
    scores = torch.where(chosen, special[pick], scores).to(DEVICE)
    seen = random_seen(3, 200, 10, generator)
    expected = masked_topk_reference(scores, seen, 150)
    overrides = {"block_v": 16, "splits": 3, **UPDATE_RULES[rule]}
    assert_topk_equal(masked_topk_kernel(scores, seen, 150, **overrides), expected)


def test_masked_topk_every_item_seen():
    scores = torch.randn(3, 37, device=DEVICE)
    seen = torch.arange(37, device=DEVICE).repeat(3, 1)
    values, indices = check_both_backends(scores, seen, 5)
    assert indices.tolist() == [[-1] * 5] * 3
    assert values.tolist() == [[-INF] * 5] * 3


def test_masked_topk_nothing_eligible():
    scores = torch.randn(2, 10, device=DEVICE)
    seen = ids([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    exclude = ids([5, 6, 7, 8, 9, 1])
    _, indices = check_both_backends(scores, seen, 3, exclude)
    assert indices[0].tolist() == [-1] * 3
    assert set(indices[1].tolist()) <= {0, 2, 3, 4}


def test_masked_topk_fewer_eligible_than_k():
    scores = torch.randn(4, 30, device=DEVICE)
    seen = torch.arange(25, device=DEVICE).repeat(4, 1)
    values, indices = check_both_backends(scores, seen, 8)
    assert (indices[:, 5:] == -1).all()
    assert (values[:, 5:] == -INF).all()
    assert set(indices[0, :5].tolist()) == {25, 26, 27, 28, 29}


def test_masked_topk_odd_seen_ids():
    generator = torch.Generator().manual_seed(23)
    scores = random_scores(3, 50, generator)
    # Cast to int32 before the range check, 2**32 + 7 and 2**32 + 9 would be
    # items 7 and 9.
    seen = ids(
        [
            [4, 4, 4, -1, 60, 2**32 + 9, -1, -1],
            [-7, 50, 2**32 + 7, 0, 0, 49, 0, -1],
            [-1, -1, 2**32 + 7, -1, -1, -1, -1, -1],
        ]
    )
    _, indices = check_both_backends(scores, seen, 50)
    assert 4 not in indices[0].tolist()
    assert 9 in indices[0].tolist()
    assert 7 in indices[1].tolist()
    assert (indices[0] >= 0).sum() == 49
    assert (indices[1] >= 0).sum() == 48
    assert (indices[2] >= 0).sum() == 50
    assert 7 in indices[2].tolist()


@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]
)
def test_masked_topk_seen_dtypes(dtype):
    generator = torch.Generator().manual_seed(24)
    scores = random_scores(2, 200, generator)
    seen = torch.randint(0, 127, (2, 40), generator=generator)
    # Padding: -1, or for uint8 the out-of-range id 255.
    seen[0, :5] = -1 if dtype != torch.uint8 else 255
    check_both_backends(scores, seen.to(dtype).to(DEVICE), 20)


def test_masked_topk_exclude():
    generator = torch.Generator().manual_seed(25)
    scores = random_scores(4, 3707, generator)
    seen = random_seen(4, 3707, 10, generator)
    top = masked_topk(scores, seen, 5, backend="torch")[1]
    # Exclude each row's first choice, a duplicate, padding and out-of-range ids.
    exclude = torch.cat([top[:, 0], ids([0, 0, -1, 3707, 10**6])])
    _, indices = check_both_backends(scores, seen, 5, exclude)
    assert not torch.isin(indices, exclude).any()
    check_both_backends(scores, seen, 5, ids([], dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_topk_half_precision(dtype):
    generator = torch.Generator().manual_seed(26)
    # Rounding to 16 bits makes many exact ties, which the kernel must break by id.
    scores = random_scores(5, 3707, generator, dtype)
    scores[0, 100:110] = 65504.0 if dtype == torch.float16 else 1e38
    scores[1, :50] = INF
    scores[2, 7::11] = NAN
    seen = random_seen(5, 3707, 25, generator)
    values, _ = check_both_backends(scores, seen, 40)
    assert values.dtype == dtype


def test_masked_topk_batch_zero():
    scores = torch.zeros(0, 100, device=DEVICE)
    seen = torch.zeros(0, 4, dtype=torch.int64, device=DEVICE)
    for backend in ("triton", "torch"):
        values, indices = masked_topk(scores, seen, 7, backend=backend)
        assert values.shape == (0, 7)
        assert indices.shape == (0, 7)
        assert indices.dtype == torch.int64


def test_masked_topk_empty_catalog():
    scores = torch.zeros(2, 0, device=DEVICE)
    seen = ids([[], []])
    for backend in ("triton", "torch"):
        values, indices = masked_topk(scores, seen, 3, backend=backend)
        assert indices.tolist() == [[-1] * 3] * 2
        assert values.tolist() == [[-INF] * 3] * 2


def test_masked_topk_non_contiguous_inputs():
    generator = torch.Generator().manual_seed(27)
    scores = random_scores(300, 6, generator).T  # [6, 300]
    seen = random_seen(6, 300, 20, generator)[:, ::2]
    assert scores.stride(1) != 1
    check_both_backends(scores, seen, 12)


def test_masked_topk_large_catalog():
    # More than 2**20 items in few tiles: the catalog size, not the tile count,
    # is what this covers.
    generator = torch.Generator().manual_seed(28)
    num_items = 2**20 + 3
    scores = random_scores(2, num_items, generator)
    scores[0, -2] = 100.0
    seen = ids([[5, num_items - 1], [-1, 0]])
    expected = masked_topk_reference(scores, seen, 16)
    actual = masked_topk_kernel(scores, seen, 16, block_v=2**16, splits=2)
    assert_topk_equal(actual, expected)
    assert actual[1][0, 0] == num_items - 2


def test_masked_topk_max_triton_k():
    generator = torch.Generator().manual_seed(29)
    scores = random_scores(1, 1500, generator)
    seen = random_seen(1, 1500, 30, generator)
    check_both_backends(scores, seen, topk.MAX_TRITON_K)
    # Beyond the kernels' maximum, "auto" falls back to the reference.
    k = topk.MAX_TRITON_K + 1
    assert_topk_equal(
        masked_topk(scores, seen, k), masked_topk_reference(scores, seen, k)
    )


# ---------------------------------------------------------------------------
# Backend selection and argument errors


class LaunchCounter:
    """Count the launches of both kernels while delegating to the real ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        for name in ("_launch_masked_topk", "_launch_fused_topk"):
            monkeypatch.setattr(topk, name, self.wrap(getattr(topk, name)))

    def wrap(self, launch):
        def counted(*args, **kwargs):
            self.calls += 1
            return launch(*args, **kwargs)

        return counted


def test_backend_selection(monkeypatch):
    counter = LaunchCounter(monkeypatch)
    scores = torch.randn(2, 20, device=DEVICE)
    hidden = torch.randn(2, 4, device=DEVICE)
    weights = torch.randn(20, 4, device=DEVICE)
    seen = ids([[1], [2]])
    for backend, launches in [("torch", 0), ("triton", 2), ("auto", 2)]:
        counter.calls = 0
        masked_topk(scores, seen, 3, backend=backend)
        masked_topk_scores(hidden, weights, seen, 3, backend=backend)
        if backend == "auto" and DEVICE.type == "cpu":
            launches = 0
        assert counter.calls == launches, backend


def test_triton_backend_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setattr(topk._load_triton(), "INTERPRETED", False)
    scores = torch.randn(2, 20)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        masked_topk(scores, torch.zeros(2, 0, dtype=torch.int64), 3, backend="triton")


def masked_topk_errors():
    """Yield (name, keyword arguments, message pattern) of invalid calls."""
    scores = torch.randn(3, 10, device=DEVICE)
    seen = ids([[1], [2], [3]])
    good = {"scores": scores, "seen": seen, "k": 2}
    yield "scores_1d", {**good, "scores": scores[0]}, "scores must be 2-D"
    yield "scores_3d", {**good, "scores": scores[None]}, "scores must be 2-D"
    yield "scores_float64", {**good, "scores": scores.double()}, "float64"
    yield "scores_int", {**good, "scores": seen.repeat(1, 10)}, "int64"
    yield "scores_list", {**good, "scores": [[1.0]]}, "torch.Tensor"
    yield "seen_rows", {**good, "seen": seen[:2]}, r"expected \[3, S\]"
    yield "seen_1d", {**good, "seen": seen[:, 0]}, r"expected \[3, S\]"
    yield "seen_float", {**good, "seen": seen.float()}, "integer dtype"
    yield "seen_list", {**good, "seen": [[1]]}, "torch.Tensor"
    yield "k_zero", {**good, "k": 0}, "at least 1"
    yield "k_negative", {**good, "k": -3}, "at least 1"
    yield "k_float", {**good, "k": 2.0}, "must be an int"
    yield "k_bool", {**good, "k": True}, "must be an int"
    yield "exclude_2d", {**good, "exclude": seen}, "1-D"
    yield "exclude_float", {**good, "exclude": seen[:, 0].float()}, "integer dtype"
    yield "exclude_list", {**good, "exclude": [1, 2]}, "torch.Tensor"
    yield "backend", {**good, "backend": "cuda"}, "invalid backend 'cuda'"
    yield "backend_case", {**good, "backend": "Triton"}, "invalid backend"
    yield (
        "k_over_max",
        {**good, "k": topk.MAX_TRITON_K + 1, "backend": "triton"},
        ("exceeds the Triton kernels' maximum"),
    )


@pytest.mark.parametrize("case", list(masked_topk_errors()), ids=lambda case: case[0])
def test_masked_topk_invalid_arguments(case):
    _, arguments, pattern = case
    with pytest.raises(ValueError, match=pattern):
        masked_topk(**arguments)


def masked_topk_scores_errors():
    """Yield (name, keyword arguments, message pattern) of invalid fused calls."""
    hidden = torch.randn(3, 8, device=DEVICE)
    weights = torch.randn(10, 8, device=DEVICE)
    seen = ids([[1], [2], [3]])
    good = {"hidden": hidden, "item_weights": weights, "seen": seen, "k": 2}
    yield "hidden_1d", {**good, "hidden": hidden[0]}, "hidden must be 2-D"
    yield "weights_3d", {**good, "item_weights": weights[None]}, "item_weights must"
    yield "width", {**good, "item_weights": weights[:, :5]}, "width 5"
    yield "dtype_mix", {**good, "item_weights": weights.half()}, "same dtype"
    yield "hidden_float64", {**good, "hidden": hidden.double()}, "float64"
    yield "seen_rows", {**good, "seen": seen[:1]}, r"expected \[3, S\]"
    yield "k_zero", {**good, "k": 0}, "at least 1"
    yield "exclude_2d", {**good, "exclude": seen}, "1-D"
    yield "backend", {**good, "backend": "numpy"}, "invalid backend"


@pytest.mark.parametrize(
    "case", list(masked_topk_scores_errors()), ids=lambda case: case[0]
)
def test_masked_topk_scores_invalid_arguments(case):
    _, arguments, pattern = case
    with pytest.raises(ValueError, match=pattern):
        masked_topk_scores(**arguments)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_device_mismatch():
    scores = torch.randn(2, 10, device=DEVICE)
    with pytest.raises(ValueError, match="move seen"):
        masked_topk(scores, torch.zeros(2, 1, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="same device"):
        masked_topk_scores(scores, torch.randn(5, 10), ids([[1], [2]]), 2)


# ---------------------------------------------------------------------------
# masked_topk_scores: the fused kernel against the reference


def check_fused_exact(hidden, weights, seen, k, exclude=None):
    """Compare the fused backends on inputs whose scores are exact in fp32.

    Returns the Triton backend's (values, indices) for further checks.
    """
    expected = masked_topk_scores(hidden, weights, seen, k, exclude, backend="torch")
    actual = masked_topk_scores(hidden, weights, seen, k, exclude, backend="triton")
    assert actual[0].dtype == torch.float32
    assert_topk_equal(actual, expected)
    return actual


@pytest.mark.parametrize(
    ("batch", "num_items", "width", "k", "seen_width", "dtype"), FUSED_EXACT_SHAPES
)
def test_masked_topk_scores_exact(batch, num_items, width, k, seen_width, dtype):
    generator = torch.Generator().manual_seed(batch * 1000 + num_items + width)
    hidden = integer_vectors(batch, width, generator, dtype)
    weights = integer_vectors(num_items, width, generator, dtype)
    seen = random_seen(batch, num_items, seen_width, generator)
    check_fused_exact(hidden, weights, seen, k)


@pytest.mark.parametrize("rule", sorted(UPDATE_RULES))
def test_masked_topk_scores_ties_across_tiles(rule):
    generator = torch.Generator().manual_seed(31)
    hidden = integer_vectors(18, 3, generator, span=1)
    hidden[0] = 0.0  # every score of row 0 is 0
    weights = integer_vectors(150, 3, generator, span=1)
    seen = random_seen(18, 150, 8, generator)
    for k in (1, 20):
        expected = masked_topk_scores_reference(hidden, weights, seen, k)
        overrides = {"block_n": 16, "splits": 3, **UPDATE_RULES[rule]}
        actual = masked_topk_scores_kernel(hidden, weights, seen, k, **overrides)
        assert_topk_equal(actual, expected)


def test_masked_topk_scores_nan_and_inf():
    generator = torch.Generator().manual_seed(32)
    hidden = integer_vectors(4, 6, generator)
    weights = integer_vectors(90, 6, generator)
    hidden[1, 2] = INF  # scores of row 1 become +-inf, or NaN where weights are 0
    hidden[2, 0] = NAN  # every score of row 2 is NaN
    weights[7] = NAN
    weights[40, 3] = -INF
    seen = random_seen(4, 90, 5, generator)
    check_fused_exact(hidden, weights, seen, 5)
    values, _ = check_fused_exact(hidden, weights, seen, 90)
    assert not torch.isnan(values).any()
    assert (values[2] == -INF).all()


def test_masked_topk_scores_random_close():
    generator = torch.Generator().manual_seed(33)
    batch, num_items, width, k = 5, 1531, 64, 20
    for dtype in (torch.float32, torch.bfloat16):
        scale = 1 / math.sqrt(width)
        hidden = normal_vectors(batch, width, generator, dtype, scale=scale)
        weights = normal_vectors(num_items, width, generator, dtype)
        seen = random_seen(batch, num_items, 40, generator)
        actual = masked_topk_scores(hidden, weights, seen, k, backend="triton")
        expected = masked_topk_scores_reference(hidden, weights, seen, k + 1)
        assert_scores_topk_close(
            actual, expected, hidden, weights, seen, tolerance=1e-5
        )


def test_masked_topk_scores_every_item_seen():
    generator = torch.Generator().manual_seed(34)
    hidden = integer_vectors(3, 8, generator)
    weights = integer_vectors(40, 8, generator)
    seen = torch.arange(40, device=DEVICE).repeat(3, 1)
    values, indices = check_fused_exact(hidden, weights, seen, 4)
    assert indices.tolist() == [[-1] * 4] * 3
    assert values.tolist() == [[-INF] * 4] * 3


def test_masked_topk_scores_exclude():
    generator = torch.Generator().manual_seed(35)
    hidden = integer_vectors(5, 8, generator)
    weights = integer_vectors(60, 8, generator)
    seen = random_seen(5, 60, 50, generator)
    exclude = ids([0, 1, 2, 2, -3, 60, 500], dtype=torch.int32)
    _, indices = check_fused_exact(hidden, weights, seen, 64, exclude)
    assert (indices[:, -4:] == -1).all()
    assert not torch.isin(indices, exclude[:3].long()).any()


def test_masked_topk_scores_empty_inputs():
    hidden = torch.zeros(0, 8, device=DEVICE)
    weights = torch.randn(30, 8, device=DEVICE)
    seen = torch.zeros(0, 2, dtype=torch.int64, device=DEVICE)
    for backend in ("triton", "torch"):
        values, indices = masked_topk_scores(hidden, weights, seen, 5, backend=backend)
        assert values.shape == (0, 5)
        assert indices.shape == (0, 5)
    # With D = 0 every score is 0, so the lowest unseen ids come first.
    empty_hidden = torch.zeros(2, 0, device=DEVICE)
    empty_weights = torch.zeros(30, 0, device=DEVICE)
    seen = ids([[0, 2], [-1, 1]])
    values, indices = check_fused_exact(empty_hidden, empty_weights, seen, 3)
    assert indices.tolist() == [[1, 3, 4], [0, 2, 3]]


def test_masked_topk_scores_non_contiguous_inputs():
    generator = torch.Generator().manual_seed(36)
    hidden = integer_vectors(12, 5, generator).T  # [5, 12]
    weights = integer_vectors(12, 300, generator).T  # [300, 12]
    seen = random_seen(5, 300, 6, generator)
    check_fused_exact(hidden, weights, seen, 9)


def test_masked_topk_scores_large_catalog():
    generator = torch.Generator().manual_seed(37)
    num_items = 2**20 + 3
    hidden = integer_vectors(2, 4, generator)
    weights = integer_vectors(num_items, 4, generator)
    weights[-1] = 50.0 * hidden[0]
    seen = ids([[5, 17], [-1, num_items - 1]])
    expected = masked_topk_scores_reference(hidden, weights, seen, 8)
    actual = masked_topk_scores_kernel(
        hidden, weights, seen, 8, block_n=2**16, splits=2
    )
    assert_topk_equal(actual, expected)
    assert actual[1][0, 0] == num_items - 1
