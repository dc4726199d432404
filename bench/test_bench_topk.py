"""Benchmarks of seen-item-masked top-K: the Triton kernels against PyTorch.

Two comparisons, each at V = 3,707 (ML-1M's catalog), 100,000 and 1,000,000 items
with k = 50 (the evaluator's largest default cut-off), 200 seen ids per row and
the padding id 0 excluded, all in fp32 as the evaluator ranks:

- ``test_masked_topk``: top-K of a ready [B, V] score matrix, with the PyTorch
  reference (``backend="torch"``) or the Triton kernel (``backend="triton"``).
- ``test_scores_topk``: top-K of ``hidden @ item_weights.T`` (D = 64), by the
  fused kernel (``masked_topk_scores``, Triton), by a torch matmul followed by
  the top-K kernel, or by the reference (torch matmul and reference top-K).

On CUDA every case runs at B = 4,096 rows. The Triton cases need CUDA and skip
on CPU, because the Triton interpreter is far too slow to benchmark. The CPU runs
only the reference, at the smaller batches of ``CPU_BATCH``. extra_info reports
the batch as ``rows``, and the benchmark group names it. A reference case that runs
out of CUDA memory skips with the reason.

extra_info also reports ``per_second`` (rows per second), ``peak_bytes`` and
``peak_measure``, the name of what ``peak_bytes`` measures:

- ``cuda_max_memory_allocated``: torch.cuda.max_memory_allocated over the timed
  rounds minus the memory allocated before them (inputs, so only temporaries and
  outputs count).
- ``rss_high_water_mark``: on CPU, the growth of the process's peak resident set
  (VmHWM in /proc/self/status, reset by writing 5 to /proc/self/clear_refs) over
  the timed rounds. It is approximate, because the allocator can reuse memory it
  has kept from earlier cases.
- ``score_matrix_bytes``: where VmHWM cannot be reset, the size of the fp32
  [B, V] score matrix, which the reference and the unfused path allocate.

``score_matrix_bytes`` is always reported as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastrec.kernels import masked_topk, masked_topk_scores

from bench.conftest import Record

CATALOG_SIZES = (3707, 100_000, 1_000_000)
BATCH = 4096
# Rows per CPU case. The reference sorts every row in full, and these batches keep
# each CPU round to a few seconds on 2 cores.
CPU_BATCH = {3707: 4096, 100_000: 128, 1_000_000: 16}
K = 50
WIDTH = 64
SEEN_WIDTH = 200
# (rounds, warmup rounds). The reference's full-row sorts take seconds per call
# at B = 4,096 and V = 1,000,000 (an estimate, not measured here), so its CUDA
# cases get fewer rounds and the file stays within about two minutes.
CUDA_KERNEL_ROUNDS = (10, 2)
CUDA_REFERENCE_ROUNDS = (3, 1)
CPU_ROUNDS = (2, 0)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Measure the peak memory between start() and stop() (see the module docstring)."""

    def __init__(self, score_matrix_bytes: int):
        self.measure = "score_matrix_bytes"
        self.peak_bytes = score_matrix_bytes
        self._base = 0

    def start(self) -> None:
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.measure = "cuda_max_memory_allocated"
        elif _reset_rss_peak():
            self._base = _rss_peak()
            self.measure = "rss_high_water_mark"

    def stop(self) -> None:
        if self.measure == "cuda_max_memory_allocated":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        elif self.measure == "rss_high_water_mark":
            self.peak_bytes = _rss_peak() - self._base


def _rss_peak() -> int:
    """Return the process's peak resident set size in bytes (Linux VmHWM)."""
    found = re.search(r"^VmHWM:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    return int(found.group(1)) * 1024


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current resident set and return True on success."""
    try:
        PROC_CLEAR_REFS.write_text("5")
        _rss_peak()
    except (OSError, AttributeError):
        return False
    return True


def rows_for(num_items: int) -> int:
    """Return the batch of a case: BATCH on CUDA, CPU_BATCH on CPU."""
    return BATCH if DEVICE.type == "cuda" else CPU_BATCH[num_items]


def seen_ids(batch: int, num_items: int) -> torch.Tensor:
    """Draw [B, SEEN_WIDTH] seen ids in [1, V) with the last quarter padded by -1."""
    seen = torch.randint(1, num_items, (batch, SEEN_WIDTH), device=DEVICE)
    seen[:, -SEEN_WIDTH // 4 :] = -1
    return seen


def run_case(
    benchmark,
    throughput: Record,
    name: str,
    group: str,
    batch: int,
    num_items: int,
    topk_call: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    uses_triton: bool,
) -> None:
    """Time one top-K call and record throughput, peak memory and the batch."""

    def timed() -> tuple[torch.Tensor, torch.Tensor]:
        result = topk_call()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return result

    if DEVICE.type != "cuda":
        rounds, warmup = CPU_ROUNDS
    elif uses_triton:
        rounds, warmup = CUDA_KERNEL_ROUNDS
    else:
        rounds, warmup = CUDA_REFERENCE_ROUNDS
    benchmark.group = f"{group} V={num_items:,} B={batch:,} {DEVICE.type}"
    score_matrix_bytes = batch * num_items * 4
    memory = PeakMemory(score_matrix_bytes)
    memory.start()
    try:
        _, indices = benchmark.pedantic(
            timed, rounds=rounds, iterations=1, warmup_rounds=warmup
        )
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        pytest.skip(
            f"{name} ran out of CUDA memory at B={batch}, V={num_items}: {error}"
        )
    memory.stop()
    assert indices.shape == (batch, K)
    assert bool((indices[:, 0] > 0).all()), "padding id 0 or -1 was returned"
    benchmark.extra_info["rows"] = batch
    benchmark.extra_info["items"] = num_items
    benchmark.extra_info["peak_bytes"] = memory.peak_bytes
    benchmark.extra_info["peak_measure"] = memory.measure
    benchmark.extra_info["score_matrix_bytes"] = score_matrix_bytes
    throughput(name, batch / benchmark.stats.stats.mean)


def skip_triton_without_cuda(uses_triton: bool) -> None:
    if uses_triton and DEVICE.type != "cuda":
        pytest.skip("the Triton kernels are benchmarked on CUDA only")


@pytest.mark.parametrize("num_items", CATALOG_SIZES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_masked_topk(benchmark, throughput: Record, backend: str, num_items: int):
    """Time masked_topk on a ready fp32 score matrix."""
    skip_triton_without_cuda(backend == "triton")
    torch.manual_seed(0)
    batch = rows_for(num_items)
    scores = torch.randn(batch, num_items, device=DEVICE)
    seen = seen_ids(batch, num_items)
    exclude = torch.zeros(1, dtype=torch.long, device=DEVICE)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        return masked_topk(scores, seen, K, exclude=exclude, backend=backend)

    name = f"topk_{backend}_v{num_items}"
    run_case(
        benchmark,
        throughput,
        name,
        "masked_topk",
        batch,
        num_items,
        call,
        uses_triton=backend == "triton",
    )


SCORE_METHODS = {
    # method: (Triton used, description)
    "fused": (True, "masked_topk_scores with the fused Triton kernel"),
    "matmul_kernel": (True, "torch matmul, then the masked_topk Triton kernel"),
    "reference": (False, "masked_topk_scores with the PyTorch reference"),
}


@pytest.mark.parametrize("num_items", CATALOG_SIZES)
@pytest.mark.parametrize("method", list(SCORE_METHODS))
def test_scores_topk(benchmark, throughput: Record, method: str, num_items: int):
    """Time top-K of hidden @ item_weights.T, fused or with the score matrix."""
    uses_triton, description = SCORE_METHODS[method]
    skip_triton_without_cuda(uses_triton)
    torch.manual_seed(0)
    batch = rows_for(num_items)
    hidden = torch.randn(batch, WIDTH, device=DEVICE) / WIDTH**0.5
    weights = torch.randn(num_items, WIDTH, device=DEVICE)
    seen = seen_ids(batch, num_items)
    exclude = torch.zeros(1, dtype=torch.long, device=DEVICE)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        if method == "matmul_kernel":
            scores = hidden @ weights.T  # [B, V]
            return masked_topk(scores, seen, K, exclude=exclude, backend="triton")
        backend = "triton" if method == "fused" else "torch"
        return masked_topk_scores(
            hidden, weights, seen, K, exclude=exclude, backend=backend
        )

    benchmark.extra_info["method"] = description
    name = f"scores_{method}_v{num_items}"
    run_case(
        benchmark,
        throughput,
        name,
        "scores_topk",
        batch,
        num_items,
        call,
        uses_triton=uses_triton,
    )
