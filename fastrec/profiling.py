"""Named ranges that show up in both the PyTorch profiler and Nsight Systems.

``stage("forward")`` opens a ``torch.profiler.record_function`` range while a
PyTorch profiler is recording and an NVTX range (``nvtx`` package) always. NVTX
calls return at once unless a tool such as Nsight Systems is attached, and the
profiler check is one flag read, so wrapping every stage of a step costs almost
nothing in an ordinary run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

try:
    import nvtx as _nvtx
except ImportError:  # nvtx is a declared dependency; a missing one only loses ranges
    _nvtx = None

# Range names of the training step and the evaluation stages, in order.
TRAIN_STAGES = ("data_wait", "h2d_copy", "forward", "backward", "optimizer_step")
EVAL_STAGES = (
    "eval_batch",
    "eval_score",
    "eval_topk",
    "eval_metrics",
    "eval_baselines",
)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark the enclosed code as the named range in every attached profiler."""
    record = None
    if torch.autograd.profiler._is_profiler_enabled:
        record = torch.profiler.record_function(name)
        record.__enter__()
    if _nvtx is not None:
        _nvtx.push_range(name, domain="fastrec")
    try:
        yield
    finally:
        if _nvtx is not None:
            _nvtx.pop_range(domain="fastrec")
        if record is not None:
            record.__exit__(None, None, None)
