"""Check the Triton top-K kernels against the PyTorch reference on a CUDA device.

Run from the repository root::

    python -m bench.topk_check            # every case, within a 90 s budget
    python -m bench.topk_check -k fused   # only cases whose name contains "fused"
    python -m bench.topk_check --budget-seconds 0   # no time budget

Each case runs ``masked_topk`` or ``masked_topk_scores`` with ``backend="triton"``
and with the reference on the same inputs, and prints one PASS, FAIL or SKIP line.
The cases cover random inputs at odd sizes and at the benchmark sizes (B = 4,096
and V = 3,707, 100,000 and 1,000,000), ties within and across tiles and catalog
splits, NaN and inf, rows with every item seen or fewer eligible items than k,
duplicate and out-of-range seen ids, exclude lists, bf16 and fp16 inputs, empty
batches and non-contiguous inputs. They run in tiers: benchmark sizes first, then
adversarial inputs at realistic sizes, small edge cases, and k = 512 and 1,024
last. No case starts once the time budget is spent, and those cases are listed
as skipped. The exit status is 1 when any case fails and 0 otherwise, skips
included.

The reference runs in row chunks so that its full-row sorts fit in GPU memory at
the benchmark sizes. masked_topk must match it exactly. masked_topk_scores must
match it exactly on small-integer inputs, whose dot products are exact in fp32 in
any summation order. On random inputs its values must agree to a tolerance and
its indices wherever the reference's scores are well separated.

Without a CUDA device the script sets TRITON_INTERPRET=1 (unless the environment
already sets TRITON_INTERPRET) and runs only the small cases in the Triton
interpreter, which takes one to three minutes on 2 CPU cores (pass
--budget-seconds 0 to run them all). If the kernels cannot run there
(TRITON_INTERPRET=0), it prints that it needs CUDA and exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

if not torch.cuda.is_available():
    # Triton reads this when the kernel module is first imported, below.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastrec.kernels import (
    masked_topk,
    masked_topk_reference,
    masked_topk_scores,
    masked_topk_scores_reference,
    testing,
    topk,
)
from fastrec.kernels.testing import (
    DEVICE,
    FUSED_EXACT_SHAPES,
    MASKED_TOPK_SHAPES,
    TopK,
    TopKMismatch,
    assert_scores_topk_close,
    assert_topk_equal,
    ids,
    masked_topk_kernel,
    masked_topk_scores_kernel,
)

BENCH_BATCH = 4096
BENCH_SIZES = (3707, 100_000, 1_000_000)
BENCH_K = 50
BENCH_SEEN = 200
# Elements of score matrix per reference chunk: 2**28 fp32 scores are 1 GiB, and
# the reference's sorts and masks take several times that.
REFERENCE_CHUNK = 2**28
# bench/gpu.sh gives this script 120 s, which includes starting Python and CUDA
# and compiling every kernel variant that the cases use.
DEFAULT_BUDGET_SECONDS = 90
INF = float("inf")
NAN = float("nan")

# Case tiers, run in this order so that a spent time budget skips the least
# important cases. Only SMALL cases are cheap enough for the Triton interpreter.
BENCH = 0  # the benchmark sizes
LARGE = 1  # adversarial inputs at realistic sizes
SMALL = 2  # edge cases at small sizes
SLOW = 3  # k = 512 and 1,024, whose sorting networks compile slowly


@dataclass
class Case:
    """One check: ``run`` raises TopKMismatch when the kernel disagrees."""

    name: str
    run: Callable[[], None]
    tier: int


# ---------------------------------------------------------------------------
# Inputs

# These builders draw on DEVICE. Each seeds its own generator with the case's
# seed plus a fixed offset, so builders that one case calls with the same seed
# give independent draws.


def generator_for(seed: int) -> torch.Generator:
    return testing.seeded_generator(seed, DEVICE)


def random_scores(batch, num_items, seed, dtype=torch.float32) -> torch.Tensor:
    return testing.random_scores(batch, num_items, generator_for(seed), dtype)


def random_seen(batch, num_items, width, seed) -> torch.Tensor:
    return testing.random_seen(batch, num_items, width, generator_for(seed + 1))


def integer_vectors(rows, width, seed, dtype=torch.float32, span=3) -> torch.Tensor:
    generator = generator_for(seed + 2)
    return testing.integer_vectors(rows, width, generator, dtype, span)


def normal_vectors(rows, width, seed, dtype=torch.float32, scale=1.0):
    generator = generator_for(seed + 3)
    return testing.normal_vectors(rows, width, generator, dtype, scale)


PADDING = [0]  # the padding id that the evaluator always excludes


# ---------------------------------------------------------------------------
# Comparisons


def reference_rows(call: Callable[[slice], TopK], batch: int, num_items: int):
    """Run a reference call over row chunks and concatenate the results."""
    rows = max(1, REFERENCE_CHUNK // max(1, num_items))
    if batch <= rows:
        return call(slice(0, batch))
    parts = [call(slice(start, start + rows)) for start in range(0, batch, rows)]
    values = torch.cat([part[0] for part in parts])
    indices = torch.cat([part[1] for part in parts])
    return values, indices


def check_topk(scores, seen, k, exclude=None, **overrides) -> None:
    """Compare masked_topk's kernel with the reference, exactly.

    ``overrides`` (block_v, splits, max_extract) go to the kernel launch.
    """
    if exclude is not None:
        exclude = ids(exclude) if isinstance(exclude, list) else exclude
    if overrides:
        actual = masked_topk_kernel(scores, seen, k, exclude, **overrides)
    else:
        actual = masked_topk(scores, seen, k, exclude=exclude, backend="triton")
    batch, num_items = scores.shape

    def reference(rows: slice) -> TopK:
        return masked_topk_reference(scores[rows], seen[rows], k, exclude)

    assert_topk_equal(actual, reference_rows(reference, batch, num_items))


def fused_result(hidden, weights, seen, k, exclude, overrides) -> TopK:
    if overrides:
        return masked_topk_scores_kernel(hidden, weights, seen, k, exclude, **overrides)
    return masked_topk_scores(
        hidden, weights, seen, k, exclude=exclude, backend="triton"
    )


def fused_reference(hidden, weights, seen, k, exclude) -> TopK:
    def reference(rows: slice) -> TopK:
        return masked_topk_scores_reference(
            hidden[rows], weights, seen[rows], k, exclude
        )

    return reference_rows(reference, hidden.shape[0], weights.shape[0])


def check_fused_exact(hidden, weights, seen, k, exclude=None, **overrides) -> None:
    """Compare masked_topk_scores' kernel with the reference on exact scores."""
    if isinstance(exclude, list):
        exclude = ids(exclude)
    actual = fused_result(hidden, weights, seen, k, exclude, overrides)
    assert_topk_equal(actual, fused_reference(hidden, weights, seen, k, exclude))


def check_fused_close(hidden, weights, seen, k, exclude=None) -> None:
    """Compare masked_topk_scores' kernel with the reference up to fp32 rounding.

    The kernel and the reference sum the same fp32 products in different orders,
    so values differ in the last bits and near-tied items may swap. See
    fastrec.kernels.testing.assert_scores_topk_close for what must still match.
    """
    if isinstance(exclude, list):
        exclude = ids(exclude)
    tolerance = 2e-5 if hidden.dtype == torch.float32 else 1e-4
    actual = fused_result(hidden, weights, seen, k, exclude, {})
    expected = fused_reference(hidden, weights, seen, k + 1, exclude)
    assert_scores_topk_close(
        actual, expected, hidden, weights, seen, exclude, tolerance=tolerance
    )


# ---------------------------------------------------------------------------
# Cases


def topk_cases() -> Iterator[Case]:
    """Yield the masked_topk cases."""
    for batch, num_items, k, width in MASKED_TOPK_SHAPES:
        seed = batch * 1000 + num_items + k

        def run(batch=batch, num_items=num_items, k=k, width=width, seed=seed):
            scores = random_scores(batch, num_items, seed)
            check_topk(scores, random_seen(batch, num_items, width, seed), k)

        yield Case(f"topk random B={batch} V={num_items} k={k} S={width}", run, SMALL)

    for batch, num_items, k, tier in [
        (1, 100_000, 50, LARGE),
        (64, 2**20 + 3, 50, LARGE),
        (1, 1500, 1024, SLOW),
        (300, 33_333, 512, SLOW),
    ]:

        def run(batch=batch, num_items=num_items, k=k):
            scores = random_scores(batch, num_items, 7)
            check_topk(scores, random_seen(batch, num_items, 200, 7), k, PADDING)

        yield Case(f"topk random B={batch} V={num_items} k={k}", run, tier)

    for num_items in BENCH_SIZES:

        def run(num_items=num_items):
            scores = random_scores(BENCH_BATCH, num_items, 8)
            seen = random_seen(BENCH_BATCH, num_items, BENCH_SEEN, 8)
            check_topk(scores, seen, BENCH_K, PADDING)

        yield Case(f"topk bench B={BENCH_BATCH} V={num_items}", run, BENCH)

    def integer_ties_bench():
        generator = generator_for(9)
        scores = torch.randint(
            0, 4, (512, 1_000_000), generator=generator, device=DEVICE
        ).float()
        seen = random_seen(512, 1_000_000, BENCH_SEEN, 9)
        check_topk(scores, seen, BENCH_K, PADDING)

    yield Case("topk ties, 4 values, B=512 V=1000000", integer_ties_bench, LARGE)

    def all_equal_rows():
        scores = torch.full((256, 100_000), 0.5, device=DEVICE)
        check_topk(scores, random_seen(256, 100_000, 50, 10), BENCH_K, PADDING)

    yield Case("topk all-equal rows B=256 V=100000", all_equal_rows, LARGE)

    def monotone_rows():
        ascending = torch.arange(1_000_000, device=DEVICE, dtype=torch.float32)
        scores = torch.stack([ascending, -ascending, ascending % 7])
        scores = scores.repeat(6, 1)  # [18, V]: every tile improves on row 0
        check_topk(scores, random_seen(18, 1_000_000, 100, 11), 100, PADDING)

    yield Case("topk ascending and descending rows V=1000000", monotone_rows, LARGE)

    for rule, max_extract in [("bitonic", 0), ("extract", 1 << 20)]:
        for splits in (1, 3):

            def run(max_extract=max_extract, splits=splits):
                generator = generator_for(12)
                scores = torch.zeros(3, 150, device=DEVICE)
                scores[1] = torch.randint(
                    0, 3, (150,), generator=generator, device=DEVICE
                ).float()
                scores[2] = torch.arange(150, device=DEVICE).float() // 20
                seen = random_seen(3, 150, 12, 12)
                for k in (1, 20, 33):
                    check_topk(
                        scores,
                        seen,
                        k,
                        block_v=16,
                        splits=splits,
                        max_extract=max_extract,
                    )

            name = f"topk ties, 16-item tiles, {splits} splits, {rule}"
            yield Case(name, run, SMALL)

    def nan_and_inf():
        generator = generator_for(13)
        scores = random_scores(64, 100_003, 13)
        special = torch.tensor([NAN, INF, -INF], device=DEVICE)
        pick = torch.randint(0, 3, scores.shape, generator=generator, device=DEVICE)
        chosen = torch.rand(scores.shape, generator=generator, device=DEVICE) < 0.3
        scores = torch.where(chosen, special[pick], scores)
        scores[0] = NAN
        scores[1] = -INF
        check_topk(scores, random_seen(64, 100_003, 40, 13), 80, PADDING)

    yield Case("topk NaN and inf B=64 V=100003", nan_and_inf, LARGE)

    def nan_and_inf_small():
        scores = torch.tensor(
            [
                [NAN, INF, -INF, 1.0, NAN, INF],
                [NAN] * 6,
                [-INF] * 6,
                [-0.0, 0.0, -0.0, 0.0, 3.0, NAN],
            ],
            device=DEVICE,
        )
        check_topk(scores, ids([[5], [-1], [0], [3]]), 6)

    yield Case("topk NaN, inf and signed zeros V=6", nan_and_inf_small, SMALL)

    def every_item_seen():
        seen = torch.arange(3707, device=DEVICE).repeat(8, 1)
        check_topk(random_scores(8, 3707, 14), seen, BENCH_K)

    yield Case("topk every item seen V=3707", every_item_seen, SMALL)

    def fewer_eligible():
        seen = torch.arange(280, device=DEVICE).repeat(4, 1)
        check_topk(random_scores(4, 300, 15), seen, BENCH_K, PADDING)

    yield Case("topk fewer eligible than k", fewer_eligible, SMALL)

    def odd_seen_ids():
        seen = ids(
            [
                [4, 4, 4, -1, 60, 2**32 + 9, -1, -1],
                [-7, 50, 2**32 + 7, 0, 0, 49, 0, -1],
                [-1, -1, 2**32 + 7, -1, -1, -1, -1, -1],
            ]
        )
        check_topk(random_scores(3, 50, 16), seen, 50)
        for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32):
            seen = torch.randint(0, 127, (4, 40), device=DEVICE)
            seen[0, :5] = 255 if dtype == torch.uint8 else -1
            check_topk(random_scores(4, 200, 16), seen.to(dtype), 20)

    yield Case("topk duplicate, out-of-range and narrow seen ids", odd_seen_ids, SMALL)

    def large_exclude():
        generator = generator_for(17)
        exclude = torch.randint(-5, 4000, (1000,), generator=generator, device=DEVICE)
        scores = random_scores(8, 3707, 17)
        check_topk(scores, random_seen(8, 3707, 30, 17), 50, exclude)
        check_topk(random_scores(4, 3707, 18), random_seen(4, 3707, 3, 18), 5, ids([]))

    yield Case("topk exclude, 1000 ids and empty", large_exclude, SMALL)

    for dtype in (torch.bfloat16, torch.float16):

        def half(dtype=dtype):
            scores = random_scores(5, 3707, 19, dtype)
            scores[0, 100:110] = 65504.0 if dtype == torch.float16 else 1e38
            scores[1, :50] = INF
            scores[2, 7::11] = NAN
            check_topk(scores, random_seen(5, 3707, 25, 19), 40)

        name = str(dtype).removeprefix("torch.")
        yield Case(f"topk {name} ties, inf and NaN V=3707", half, SMALL)

        def half_bench(dtype=dtype):
            scores = random_scores(BENCH_BATCH, 100_000, 20, dtype)
            seen = random_seen(BENCH_BATCH, 100_000, BENCH_SEEN, 20)
            check_topk(scores, seen, BENCH_K, PADDING)

        yield Case(f"topk {name} bench B={BENCH_BATCH} V=100000", half_bench, LARGE)

    def empty_inputs():
        check_topk(torch.zeros(0, 100, device=DEVICE), ids([[]] * 0).view(0, 4), 7)
        check_topk(torch.zeros(2, 0, device=DEVICE), ids([[], []]), 3)

    yield Case("topk B=0 and V=0", empty_inputs, SMALL)

    def non_contiguous():
        scores = random_scores(300, 6, 21).T  # [6, 300] with stride(1) != 1
        check_topk(scores, random_seen(6, 300, 20, 21)[:, ::2], 12)

    yield Case("topk non-contiguous scores and seen", non_contiguous, SMALL)


def fused_cases() -> Iterator[Case]:
    """Yield the masked_topk_scores cases."""
    for batch, num_items, width, k, seen_width, dtype in FUSED_EXACT_SHAPES:
        seed = batch * 100 + num_items + width

        def run(
            batch=batch,
            num_items=num_items,
            width=width,
            k=k,
            seen_width=seen_width,
            dtype=dtype,
            seed=seed,
        ):
            hidden = integer_vectors(batch, width, seed, dtype)
            weights = integer_vectors(num_items, width, seed + 10, dtype)
            seen = random_seen(batch, num_items, seen_width, seed)
            check_fused_exact(hidden, weights, seen, k)

        name = str(dtype).removeprefix("torch.")
        label = f"B={batch} V={num_items} D={width} k={k} {name}"
        yield Case(f"fused exact {label}", run, SMALL)

    # fp32 at every benchmark size, bf16 at V = 100,000 only.
    sizes = [(size, torch.float32, BENCH) for size in BENCH_SIZES]
    for num_items, dtype, tier in [*sizes, (100_000, torch.bfloat16, LARGE)]:

        def exact_bench(num_items=num_items, dtype=dtype):
            hidden = integer_vectors(BENCH_BATCH, 64, 30, dtype)
            weights = integer_vectors(num_items, 64, 31, dtype)
            seen = random_seen(BENCH_BATCH, num_items, BENCH_SEEN, 30)
            check_fused_exact(hidden, weights, seen, BENCH_K, PADDING)

        def close_bench(num_items=num_items, dtype=dtype):
            hidden = normal_vectors(BENCH_BATCH, 64, 32, dtype, scale=1 / 8)
            weights = normal_vectors(num_items, 64, 33, dtype)
            seen = random_seen(BENCH_BATCH, num_items, BENCH_SEEN, 32)
            check_fused_close(hidden, weights, seen, BENCH_K, PADDING)

        name = str(dtype).removeprefix("torch.")
        label = f"B={BENCH_BATCH} V={num_items} D=64 {name}"
        yield Case(f"fused exact bench {label}", exact_bench, tier)
        yield Case(f"fused random bench {label}", close_bench, tier)

    for dtype in (torch.float32, torch.bfloat16, torch.float16):

        def close_small(dtype=dtype):
            hidden = normal_vectors(5, 64, 34, dtype, scale=1 / 8)
            weights = normal_vectors(1531, 64, 35, dtype)
            check_fused_close(hidden, weights, random_seen(5, 1531, 40, 34), 20)

        name = str(dtype).removeprefix("torch.")
        yield Case(f"fused random B=5 V=1531 D=64 {name}", close_small, SMALL)

    def large_k():
        hidden = integer_vectors(40, 64, 36)
        weights = integer_vectors(20_000, 64, 37)
        seen = random_seen(40, 20_000, 100, 36)
        check_fused_exact(hidden, weights, seen, 1024, PADDING)
        check_fused_exact(hidden, weights, seen, 512, PADDING)

    yield Case("fused exact k=512 and k=1024 V=20000", large_k, SLOW)

    def large_catalog():
        hidden = integer_vectors(70, 48, 38)
        weights = integer_vectors(2**20 + 3, 48, 39)
        seen = random_seen(70, 2**20 + 3, 200, 38)
        check_fused_exact(hidden, weights, seen, BENCH_K, PADDING)

    yield Case("fused exact B=70 V=1048579 D=48", large_catalog, LARGE)

    for rule, max_extract in [("bitonic", 0), ("extract", 1 << 20)]:

        def run(max_extract=max_extract):
            hidden = integer_vectors(18, 3, 40, span=1)
            hidden[0] = 0.0
            weights = integer_vectors(150, 3, 41, span=1)
            seen = random_seen(18, 150, 8, 40)
            for k in (1, 20):
                check_fused_exact(
                    hidden,
                    weights,
                    seen,
                    k,
                    block_n=16,
                    splits=3,
                    max_extract=max_extract,
                )

        yield Case(f"fused ties, 16-item tiles, 3 splits, {rule}", run, SMALL)

    def nan_and_inf():
        hidden = integer_vectors(4, 6, 42)
        weights = integer_vectors(90, 6, 43)
        hidden[1, 2] = INF
        hidden[2, 0] = NAN
        weights[7] = NAN
        weights[40, 3] = -INF
        seen = random_seen(4, 90, 5, 42)
        check_fused_exact(hidden, weights, seen, 5)
        check_fused_exact(hidden, weights, seen, 90)

    yield Case("fused NaN and inf", nan_and_inf, SMALL)

    def seen_and_exclude():
        hidden = integer_vectors(3, 8, 44)
        weights = integer_vectors(40, 8, 45)
        check_fused_exact(
            hidden, weights, torch.arange(40, device=DEVICE).repeat(3, 1), 4
        )
        hidden = integer_vectors(5, 8, 46)
        weights = integer_vectors(60, 8, 47)
        exclude = ids([0, 1, 2, 2, -3, 60, 500], dtype=torch.int32)
        check_fused_exact(hidden, weights, random_seen(5, 60, 50, 46), 64, exclude)

    yield Case(
        "fused every item seen, fewer eligible, exclude", seen_and_exclude, SMALL
    )

    def empty_inputs():
        seen = ids([[0, 2], [-1, 1]])
        check_fused_exact(
            torch.zeros(2, 0, device=DEVICE), torch.zeros(30, 0, device=DEVICE), seen, 3
        )
        hidden = torch.zeros(0, 8, device=DEVICE)
        weights = integer_vectors(30, 8, 48)
        check_fused_exact(hidden, weights, ids([[]] * 0).view(0, 2), 5)

    yield Case("fused B=0 and D=0", empty_inputs, SMALL)

    def non_contiguous():
        hidden = integer_vectors(12, 5, 49).T
        weights = integer_vectors(12, 300, 50).T
        check_fused_exact(hidden, weights, random_seen(5, 300, 6, 49), 9)

    yield Case("fused non-contiguous hidden and weights", non_contiguous, SMALL)


# ---------------------------------------------------------------------------
# Driver


def run_cases(cases: list[Case], budget_seconds: float) -> tuple[int, int]:
    """Run each case and print one line per case.

    Once ``budget_seconds`` have passed (0 means no limit), the remaining cases
    are listed as skipped. Returns the numbers of failed and skipped cases.
    """
    failures = 0
    skipped = 0
    began = time.perf_counter()
    for case in cases:
        start = time.perf_counter()
        if budget_seconds and start - began > budget_seconds:
            skipped += 1
            print(f"SKIP {case.name}: the {budget_seconds:.0f} s budget is spent")
            continue
        try:
            case.run()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
        except TopKMismatch as error:
            failures += 1
            print(f"FAIL {case.name}: {error}", flush=True)
            continue
        # Any other error (a Triton compile error, CUDA out of memory) fails this
        # case, and the remaining cases still run.
        except Exception as error:  # noqa: BLE001
            failures += 1
            print(f"FAIL {case.name}: {type(error).__name__}: {error}", flush=True)
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            continue
        seconds = time.perf_counter() - start
        print(f"PASS {case.name} ({seconds:.1f} s)", flush=True)
    return failures, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.topk_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "-k",
        dest="pattern",
        default="",
        help="run only the cases whose name contains this text",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=DEFAULT_BUDGET_SECONDS,
        help="start no new case after this many seconds, 0 for no limit "
        f"(default {DEFAULT_BUDGET_SECONDS})",
    )
    args = parser.parse_args(argv)

    if DEVICE.type != "cuda" and not topk.triton_interpreted():
        print(
            "topk_check needs a CUDA device, or TRITON_INTERPRET=1 for the small "
            "cases; skipped"
        )
        return 0
    # An exact fp32 reference for masked_topk_scores needs IEEE fp32 matmuls.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    cases = [
        case for case in [*topk_cases(), *fused_cases()] if args.pattern in case.name
    ]
    cases.sort(key=lambda case: case.tier)  # stable: file order within a tier
    if DEVICE.type != "cuda":
        needs_cuda = sum(case.tier != SMALL for case in cases)
        cases = [case for case in cases if case.tier == SMALL]
        print(
            f"no CUDA device: running {len(cases)} small cases in the Triton "
            f"interpreter and skipping {needs_cuda} that need CUDA",
            flush=True,
        )
    else:
        print(f"device: {torch.cuda.get_device_name(DEVICE)}", flush=True)
    start = time.perf_counter()
    failures, skipped = run_cases(cases, args.budget_seconds)
    seconds = time.perf_counter() - start
    passed = len(cases) - failures - skipped
    print(
        f"topk_check: {passed} passed, {failures} failed, {skipped} skipped "
        f"in {seconds:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
