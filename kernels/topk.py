"""Seen-item-masked top-K for evaluation: argument checks and backend dispatch.

Shape legend: B batch rows, V catalog items, D hidden width, K top-k (K_PAD: k
rounded up to a power of two), S seen-list length (SEEN_LEN: the sorted list with
exclude appended, rounded up to a power of two), E excluded ids.

``backend="auto"`` runs the Triton kernels on CUDA tensors and the PyTorch path
(fastrec.kernels.select, exact like the reference but faster) on CPU tensors.
``"triton"`` forces the kernels, which on CPU tensors need the Triton interpreter
(TRITON_INTERPRET=1). ``"torch"`` forces the PyTorch path.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from .keys import decode_keys
from .select import masked_topk_scores_torch, masked_topk_torch

BACKENDS = ("auto", "triton", "torch")
SCORE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ID_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)

# The kernels keep the running top-K in registers. Larger k works with the
# PyTorch path but would spill badly in the kernels.
MAX_TRITON_K = 1024
# Item ids travel as int32 in the kernels and in the low half of each key.
MAX_TRITON_ITEMS = 2**31 - 1
# A tile with more new candidates than this is merged with sorting networks.
# Fewer are moved into the running top-K one at a time, which costs one tile-wide
# max per candidate. NOTE: an estimate of where the two costs cross, not measured.
MAX_EXTRACT = 16
# Sorts after every valid id (and after V) in the padded seen lists.
_SEEN_PAD = 2**31 - 1

_triton_module: ModuleType | None = None


def masked_topk(
    scores: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each row's k highest-scoring items that the row has not seen.

    Args:
        scores: [B, V] float32, bfloat16 or float16 scores.
        seen: [B, S] integer item ids per row, padded with -1. Ids outside
            [0, V) are ignored and duplicates are allowed. S may be 0.
        k: number of items to return per row, at least 1 (k > V is allowed).
        exclude: optional 1-D integer ids that no row may return (for example
            the padding id 0). It is moved to the device of ``scores``.
        backend: "auto", "triton" or "torch" (see the module docstring).

    Returns:
        (values, indices), both [B, k]. ``values`` has the dtype of ``scores``
        and ``indices`` is int64. Each row is in descending score order, ties
        go to the lower item id and NaN ranks as -inf (a NaN item is returned
        with value -inf). Slots beyond the row's eligible items hold index -1
        and value -inf.

    Raises:
        ValueError: on an invalid shape, dtype, device, k or backend, or when
            backend="triton" gets CPU tensors without the Triton interpreter.
    """
    _check_backend(backend)
    _check_scores("scores", scores)
    batch, num_items = scores.shape
    _check_seen(seen, batch, scores.device)
    k = _check_k(k)
    exclude = _check_exclude(exclude, scores.device)

    if not _use_triton(backend, scores.device, k, num_items):
        return masked_topk_torch(scores, seen, k, exclude)
    if batch == 0 or num_items == 0:
        return _empty_result(batch, k, scores.dtype, scores.device)
    keys = _launch_masked_topk(scores, seen, k, exclude)
    values, indices = decode_keys(keys)
    return values.to(scores.dtype), indices


def masked_topk_scores(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each row's top-k unseen items by the score ``hidden @ item_weights.T``.

    The Triton backend computes the scores tile by tile with fp32 accumulation
    (IEEE fp32 products for fp32 inputs, no TF32) and keeps a running top-K, so
    the [B, V] score matrix is never materialized. The torch backend computes
    the full matrix in fp32.

    Args:
        hidden: [B, D] float32, bfloat16 or float16 query vectors.
        item_weights: [V, D] item vectors of the same dtype as ``hidden``.
        seen, k, exclude, backend: as in :func:`masked_topk`.

    Returns:
        (values [B, k] float32, indices [B, k] int64), with the ordering, tie
        and padding rules of :func:`masked_topk`.

    Raises:
        ValueError: as in :func:`masked_topk`, or when the widths or dtypes of
            ``hidden`` and ``item_weights`` differ.
    """
    _check_backend(backend)
    _check_scores("hidden", hidden)
    _check_scores("item_weights", item_weights)
    if item_weights.dtype != hidden.dtype:
        raise ValueError(
            f"item_weights has dtype {item_weights.dtype} but hidden has "
            f"{hidden.dtype}; convert both to the same dtype"
        )
    if item_weights.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"item_weights has width {item_weights.shape[1]} but hidden has width "
            f"{hidden.shape[1]}; expected item_weights of shape [V, {hidden.shape[1]}]"
        )
    if item_weights.device != hidden.device:
        raise ValueError(
            f"item_weights is on {item_weights.device} but hidden is on "
            f"{hidden.device}; move both to the same device"
        )
    batch = hidden.shape[0]
    num_items = item_weights.shape[0]
    _check_seen(seen, batch, hidden.device)
    k = _check_k(k)
    exclude = _check_exclude(exclude, hidden.device)

    if not _use_triton(backend, hidden.device, k, num_items):
        return masked_topk_scores_torch(hidden, item_weights, seen, k, exclude)
    if batch == 0 or num_items == 0:
        return _empty_result(batch, k, torch.float32, hidden.device)
    keys = _launch_fused_topk(hidden, item_weights, seen, k, exclude)
    return decode_keys(keys)


# ---------------------------------------------------------------------------
# Argument checks


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(
            f"invalid backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        )


def _check_scores(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D, got shape {tuple(tensor.shape)}; "
            f"expected [B, V] scores or [rows, D] vectors"
        )
    if tensor.dtype not in SCORE_DTYPES:
        raise ValueError(
            f"{name} has dtype {tensor.dtype}; expected float32, bfloat16 or float16"
        )


def _check_seen(seen: torch.Tensor, batch: int, device: torch.device) -> None:
    if not isinstance(seen, torch.Tensor):
        raise ValueError(f"seen must be a torch.Tensor, got {type(seen).__name__}")
    if seen.dim() != 2 or seen.shape[0] != batch:
        raise ValueError(
            f"seen has shape {tuple(seen.shape)}; expected [{batch}, S] item ids "
            f"padded with -1 (S may be 0)"
        )
    if seen.dtype not in ID_DTYPES:
        raise ValueError(f"seen has dtype {seen.dtype}; expected an integer dtype")
    if seen.device != device:
        raise ValueError(
            f"seen is on {seen.device} but the scores are on {device}; "
            f"move seen to {device}"
        )


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k


def _check_exclude(
    exclude: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    if exclude is None:
        return None
    if not isinstance(exclude, torch.Tensor):
        raise ValueError(
            f"exclude must be a 1-D torch.Tensor of item ids or None, "
            f"got {type(exclude).__name__}"
        )
    if exclude.dim() != 1:
        raise ValueError(
            f"exclude has shape {tuple(exclude.shape)}; expected a 1-D tensor of ids"
        )
    if exclude.dtype not in ID_DTYPES:
        raise ValueError(
            f"exclude has dtype {exclude.dtype}; expected an integer dtype"
        )
    return exclude.to(device)


# ---------------------------------------------------------------------------
# Backend selection


def _use_triton(backend: str, device: torch.device, k: int, num_items: int) -> bool:
    """Decide the backend, loading the Triton kernels when they are needed."""
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return False
    if k > MAX_TRITON_K:
        if backend == "triton":
            raise ValueError(
                f"k={k} exceeds the Triton kernels' maximum of {MAX_TRITON_K}; "
                f'use backend="torch" for larger k'
            )
        return False
    if num_items > MAX_TRITON_ITEMS:
        raise ValueError(
            f"V={num_items} items exceeds the Triton kernels' maximum of "
            f'{MAX_TRITON_ITEMS}; use backend="torch"'
        )
    module = _load_triton()
    if device.type != "cuda" and not module.INTERPRETED:
        raise ValueError(
            'backend="triton" on CPU tensors needs the Triton interpreter: set '
            "TRITON_INTERPRET=1 in the environment before the first Triton call "
            '(and before importing triton), or use CUDA tensors or backend="torch"'
        )
    return True


def _load_triton() -> ModuleType:
    """Import the kernel module on first use, so CPU callers never need triton."""
    global _triton_module
    if _triton_module is None:
        from . import triton_topk

        _triton_module = triton_topk
    return _triton_module


# ---------------------------------------------------------------------------
# Kernel launches


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _empty_result(
    batch: int, k: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.full((batch, k), float("-inf"), dtype=dtype, device=device)
    indices = torch.full((batch, k), -1, dtype=torch.int64, device=device)
    return values, indices


def _sorted_seen(
    seen: torch.Tensor, exclude: torch.Tensor | None, num_items: int
) -> torch.Tensor:
    """Build each row's ascending blocked-id list for the kernels' binary search.

    Returns [B, SEEN_LEN] int32, SEEN_LEN a power of two >= S + E (at least 1),
    padded with INT32_MAX. Out-of-range ids become padding too.
    """
    batch = seen.shape[0]
    blocked = seen.to(torch.int64)
    if exclude is not None and exclude.numel() > 0:
        extra = exclude.to(torch.int64).unsqueeze(0).expand(batch, -1)  # [B, E]
        blocked = torch.cat([blocked, extra], dim=1)  # [B, S + E]
    blocked = torch.where((blocked >= 0) & (blocked < num_items), blocked, _SEEN_PAD)
    length = _next_power_of_two(max(1, blocked.shape[1]))
    if length > blocked.shape[1]:
        pad = blocked.new_full((batch, length - blocked.shape[1]), _SEEN_PAD)
        blocked = torch.cat([blocked, pad], dim=1)  # [B, SEEN_LEN]
    blocked = torch.sort(blocked, dim=1).values
    return blocked.to(torch.int32).contiguous()


def _split_count(rows: int, tiles: int, device: torch.device) -> int:
    """Choose how many programs share one row's catalog.

    Few rows leave most of the GPU idle, so the catalog is split until there are
    about four programs per SM. NOTE: the factor of four is a guess, not a
    measured optimum. In the interpreter (CPU tensors) a small target keeps the
    split path in use for small batches without multiplying program overhead.
    """
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 4
    return max(1, min(tiles, math.ceil(target / max(1, rows))))


def _split_layout(num_items: int, block: int, splits: int) -> tuple[int, int]:
    """Return (items per split, number of splits) with whole tiles per split."""
    tiles = math.ceil(num_items / block)
    tiles_per_split = math.ceil(tiles / max(1, min(splits, tiles)))
    items_per_split = tiles_per_split * block
    return items_per_split, math.ceil(num_items / items_per_split)


def _best_keys(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Reduce unordered [B, SPLITS, K_PAD] kernel keys to each row's best k, sorted."""
    batch, splits, k_pad = keys.shape
    keys = keys.reshape(batch, splits * k_pad)  # [B, SPLITS * K_PAD]
    # Keys are unique apart from KEY_EMPTY, so torch.topk's order is exact.
    return torch.topk(keys, k, dim=1, sorted=True).values


def _launch_masked_topk(
    scores: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    block_v: int | None = None,
    splits: int | None = None,
    max_extract: int = MAX_EXTRACT,
) -> torch.Tensor:
    """Run the masked top-K kernel and return the best k keys per row, [B, k].

    ``block_v``, ``splits`` and ``max_extract`` override the tile size, the
    catalog split and the tile-update rule (see MAX_EXTRACT) for tests. The
    tile size is rounded up to a power of two of at least K_PAD.
    """
    triton_topk = _load_triton()
    batch, num_items = scores.shape
    if scores.stride(1) != 1:
        scores = scores.contiguous()
    seen_sorted = _sorted_seen(seen, exclude, num_items)
    seen_len = seen_sorted.shape[1]

    k_pad = max(2, _next_power_of_two(k))
    if block_v is None:
        block_v = min(1024, _next_power_of_two(num_items))
    block_v = max(k_pad, _next_power_of_two(block_v))
    if splits is None:
        splits = _split_count(batch, math.ceil(num_items / block_v), scores.device)
    items_per_split, splits = _split_layout(num_items, block_v, splits)

    keys = torch.empty((batch, splits, k_pad), dtype=torch.int64, device=scores.device)
    triton_topk.masked_topk_kernel[(batch, splits)](
        scores,
        seen_sorted,
        keys,
        num_items,
        k,
        scores.stride(0),
        seen_sorted.stride(0),
        items_per_split,
        SEEN_LEN=seen_len,
        LOG_SEEN=seen_len.bit_length() - 1,
        LOG_K=k_pad.bit_length() - 1,
        LOG_BLOCK_V=block_v.bit_length() - 1,
        MAX_EXTRACT=max_extract,
        num_warps=4,
    )
    return _best_keys(keys, k)


def _launch_fused_topk(
    hidden: torch.Tensor,
    item_weights: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    block_n: int | None = None,
    splits: int | None = None,
    max_extract: int = MAX_EXTRACT,
) -> torch.Tensor:
    """Run the fused matmul top-K kernel and return the best k keys per row, [B, k].

    ``block_n``, ``splits`` and ``max_extract`` override the item tile, the
    catalog split and the tile-update rule for tests.
    """
    triton_topk = _load_triton()
    batch, width = hidden.shape
    num_items = item_weights.shape[0]
    seen_sorted = _sorted_seen(seen, exclude, num_items)
    seen_len = seen_sorted.shape[1]

    k_pad = max(2, _next_power_of_two(k))
    # tl.dot needs every block dimension to be at least 16.
    # NOTE: these block sizes keep ptxas (sm_90) free of spills but are not tuned
    # by measurement on a GPU.
    if block_n is None:
        block_n = min(64, _next_power_of_two(num_items))
    block_n = max(16, k_pad, _next_power_of_two(block_n))
    block_b = max(16, min(32 if k_pad <= 32 else 16, _next_power_of_two(batch)))
    block_d = max(16, min(32, _next_power_of_two(width)))
    row_blocks = math.ceil(batch / block_b)
    if splits is None:
        splits = _split_count(row_blocks, math.ceil(num_items / block_n), hidden.device)
    items_per_split, splits = _split_layout(num_items, block_n, splits)
    # The triton 3.9 interpreter's dot misreads bf16, so it gets fp32 operands.
    upcast = triton_topk.INTERPRETED and hidden.dtype == torch.bfloat16
    # IEEE fp32 products for fp32 inputs, so results match the fp32 reference.
    precision = "ieee" if hidden.dtype == torch.float32 or upcast else None

    keys = torch.empty((batch, splits, k_pad), dtype=torch.int64, device=hidden.device)
    triton_topk.fused_topk_kernel[(row_blocks, splits)](
        hidden,
        item_weights,
        seen_sorted,
        keys,
        batch,
        num_items,
        width,
        k,
        hidden.stride(0),
        hidden.stride(1),
        item_weights.stride(0),
        item_weights.stride(1),
        seen_sorted.stride(0),
        items_per_split,
        SEEN_LEN=seen_len,
        LOG_SEEN=seen_len.bit_length() - 1,
        LOG_K=k_pad.bit_length() - 1,
        LOG_BLOCK_B=block_b.bit_length() - 1,
        LOG_BLOCK_N=block_n.bit_length() - 1,
        BLOCK_D=block_d,
        MAX_EXTRACT=max_extract,
        INPUT_PRECISION=precision,
        UPCAST=upcast,
        num_warps=4,
    )
    return _best_keys(keys, k)


def triton_interpreted() -> bool:
    """Return whether the Triton kernels run in the interpreter (loads them)."""
    return bool(_load_triton().INTERPRETED)
