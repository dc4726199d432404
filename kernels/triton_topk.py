"""Triton kernels for seen-item-masked top-K and its fused matmul variant.

Shape legend: B batch rows, V catalog items, D hidden width, K top-k (padded to a
power of two, K_PAD), S seen-list length (padded to a power of two, SEEN_LEN).

Each candidate item becomes one int64 sort key (see ``_encode_keys``): the high
32 bits are an order-preserving integer code of the fp32 score and the low 32 bits
are ``0xFFFFFFFF - item_id``, so ordering keys descending orders items by score
descending and then by item id ascending. Keys of eligible items are unique, which
makes the top-K exact and deterministic. An ineligible item (seen, excluded or past
the end of the catalog) gets ``INT64_MIN``, which is below the key of every
eligible item, NaN and -inf included.

Each kernel writes the running top-K keys of one (row, split) pair, sorted
descending, into ``keys_out[B, SPLITS, K_PAD]``. The dispatcher merges the splits
and decodes ids and values from the keys.

This module imports triton at import time, and triton 3.9 reads TRITON_INTERPRET
when ``triton.jit`` decorates a function, so whether these kernels run in the
interpreter is fixed when this module is first imported.
"""

from __future__ import annotations

import triton
import triton.language as tl

# True when the kernels below were built for the Triton interpreter (CPU tensors).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

# INT64_MIN: the key of an ineligible item or an empty slot.
KEY_EMPTY = tl.constexpr(-(2**63))
# INT64_MAX: fills the running top-K slots past k so that they are never replaced.
KEY_FULL = tl.constexpr(2**63 - 1)


@triton.jit
def _encode_keys(scores, ids32):
    """Map fp32 scores and int32 item ids to int64 keys ordered (score desc, id asc)."""
    # NaN ranks as -inf, and -0.0 ties with +0.0 so that the id decides between them.
    scores = tl.where(scores != scores, float("-inf"), scores)
    scores = tl.where(scores == 0.0, 0.0, scores)
    bits = scores.to(tl.int32, bitcast=True)
    # Negative floats order backwards as integers, so flip their 31 magnitude bits.
    code = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    # ~id as uint32 is 0xFFFFFFFF - id, and uint32 -> int64 zero-extends.
    low = (~ids32).to(tl.uint32, bitcast=True).to(tl.int64)
    return (code.to(tl.int64) << 32) | low


@triton.jit
def _is_seen(
    row_seen_ptrs, ids32, seen_mask, SEEN_LEN: tl.constexpr, LOG_SEEN: tl.constexpr
):
    """Return whether each id occurs in its row's sorted seen list.

    ``row_seen_ptrs`` points at the start of each id's row (broadcast to the shape
    of ``ids32``). The list has SEEN_LEN = 2**LOG_SEEN entries sorted ascending.
    The branchless search ends on the first entry >= id (or the last entry), so
    the id is present exactly when that entry equals it.
    """
    pos = tl.zeros_like(ids32)
    for step in tl.static_range(LOG_SEEN):
        # Halves of SEEN_LEN >> (step + 1) entries, inline to stay compile-time.
        probe = tl.load(
            row_seen_ptrs + (pos + ((SEEN_LEN >> (step + 1)) - 1)),
            mask=seen_mask,
            other=0,
        )
        pos = tl.where(probe < ids32, pos + (SEEN_LEN >> (step + 1)), pos)
    found = tl.load(row_seen_ptrs + pos, mask=seen_mask, other=-1)
    return found == ids32


@triton.jit
def _bitonic_stage(h, STAGE: tl.constexpr, ORDER: tl.constexpr, N_DIMS: tl.constexpr):
    """Run one bitonic merge stage over blocks of 2**STAGE innermost elements.

    ``h`` is a [2] * N_DIMS hypercube whose innermost axes index a row. ORDER 0
    sorts every block ascending, 1 descending, and 2 alternates the direction
    from block to block. Each compare-and-swap takes the min and max over a
    pair axis, where tl.sort exchanges partners with xor_sum, because the
    Triton interpreter runs xor_sum element by element in Python and min and
    max in NumPy. The helpers are inlined for the same reason: the interpreter
    pays about a millisecond per nested jit call.
    """
    if ORDER == 2:
        # 1 marks the blocks that sort descending: bit STAGE of the position.
        flip = tl.reshape(
            tl.arange(0, 2), [1] * (N_DIMS - STAGE - 1) + [2] + [1] * STAGE
        )
    else:
        flip = ORDER
    for i in tl.static_range(STAGE):
        # Pairs differ in position bit STAGE - 1 - i, which is cube axis
        # N_DIMS - STAGE + i. The expressions stay inline because a name assigned
        # in a jit loop stops being a compile-time constant.
        low = tl.min(h, axis=N_DIMS - STAGE + i, keep_dims=True)
        high = tl.max(h, axis=N_DIMS - STAGE + i, keep_dims=True)
        is_right = tl.reshape(
            tl.arange(0, 2), [1] * (N_DIMS - STAGE + i) + [2] + [1] * (STAGE - 1 - i)
        )
        h = tl.where((is_right ^ flip) == 1, high, low)
    return h


@triton.jit
def _top_sorted(
    x,
    LOG_K: tl.constexpr,
    LOG_N: tl.constexpr,
    N_DIMS: tl.constexpr,
    ORDER: tl.constexpr,
):
    """Return the 2**LOG_K largest entries of each last-axis row, sorted.

    ``x`` has last axis 2**LOG_N and 2**N_DIMS elements, and ORDER 0 sorts the
    result ascending, 1 descending. After LOG_K stages each row holds sorted
    blocks of 2**LOG_K in alternating directions, and the elementwise max of two
    neighbouring blocks holds their top 2**LOG_K as a bitonic sequence.
    """
    h = tl.reshape(x, [2] * N_DIMS)
    for i in tl.static_range(1, LOG_K + 1):
        h = _bitonic_stage(h, i, 2 if i < LOG_N else ORDER, N_DIMS)
    for i in tl.static_range(LOG_K + 1, LOG_N + 1):
        # Before this step the cube has N_DIMS + LOG_K + 1 - i axes, and the max
        # over the axis just above the block halves the row.
        h = tl.max(h, axis=N_DIMS - i)
        h = _bitonic_stage(h, LOG_K, 2 if i < LOG_N else ORDER, N_DIMS + LOG_K - i)
    return tl.reshape(h, x.shape[:-1] + [2**LOG_K])


@triton.jit
def _merge_bitonic(
    running,
    keys,
    LOG_K: tl.constexpr,
    LOG_N: tl.constexpr,
    LOG_ROWS: tl.constexpr,
):
    """Replace the running top-K by the top-K of it and a tile, with sorting networks.

    ``running`` has 2**LOG_K keys per row (in any order) and ``keys`` 2**LOG_N.
    The elementwise max of the running keys sorted descending and the tile's
    top-K sorted ascending holds the top-K of both as a bitonic sequence, which
    one merge stage sorts.
    """
    ranked = _top_sorted(running, LOG_K, LOG_K, LOG_ROWS + LOG_K, 1)
    top = _top_sorted(keys, LOG_K, LOG_N, LOG_ROWS + LOG_N, 0)
    merged = tl.maximum(ranked, top)
    h = tl.reshape(merged, [2] * (LOG_ROWS + LOG_K))
    h = _bitonic_stage(h, LOG_K, 1, LOG_ROWS + LOG_K)
    return tl.reshape(h, running.shape)


@triton.jit
def masked_topk_kernel(
    scores_ptr,
    seen_ptr,
    keys_out_ptr,
    V,
    K,
    stride_scores_b,
    stride_seen_b,
    items_per_split,
    SEEN_LEN: tl.constexpr,
    LOG_SEEN: tl.constexpr,
    LOG_K: tl.constexpr,
    LOG_BLOCK_V: tl.constexpr,
    MAX_EXTRACT: tl.constexpr,
):
    """Write the masked top-K keys of one row's slice of the catalog.

    Grid: (B, SPLITS). Program (row, split) scans items
    [split * items_per_split, (split + 1) * items_per_split) in tiles of
    2**LOG_BLOCK_V and writes its best K keys, in no particular order, to
    keys_out[row, split, :K] (the remaining K_PAD - K slots get KEY_EMPTY).
    """
    K_PAD: tl.constexpr = 2**LOG_K
    BLOCK_V: tl.constexpr = 2**LOG_BLOCK_V
    # int64 row offsets: row * stride exceeds 2**31 once B * V does.
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    start = split.to(tl.int64) * items_per_split
    end = tl.minimum(start + items_per_split, V)

    row_scores = scores_ptr + row * stride_scores_b
    row_seen = seen_ptr + row * stride_seen_b
    lanes = tl.arange(0, BLOCK_V)
    slots = tl.arange(0, K_PAD)

    # Slots past K hold KEY_FULL, which no key displaces, so the minimum of the
    # running keys is always the K-th best key so far.
    running = tl.where(slots < K, tl.full([K_PAD], KEY_EMPTY, tl.int64), KEY_FULL)
    kth = tl.min(running)
    for tile_start in range(start, end, BLOCK_V):
        offs = tile_start + lanes  # [BLOCK_V] int64 item ids
        in_range = offs < end
        scores = tl.load(row_scores + offs, mask=in_range, other=float("-inf"))
        ids32 = offs.to(tl.int32)
        keys = _encode_keys(scores.to(tl.float32), ids32)
        keys = tl.where(in_range, keys, KEY_EMPTY)
        # Masking only lowers keys, so a tile whose best unmasked key cannot beat
        # the K-th key is skipped before any seen-list search.
        if tl.max(keys) > kth:
            candidate = keys > kth
            seen = _is_seen(row_seen, ids32, candidate, SEEN_LEN, LOG_SEEN)
            keys = tl.where(candidate & ~seen, keys, KEY_EMPTY)
            count = tl.sum((keys > kth).to(tl.int32))
            if count > MAX_EXTRACT:
                running = _merge_bitonic(running, keys, LOG_K, LOG_BLOCK_V, 0)
            else:
                # Few candidates: move the best one into the worst slot at a time.
                best = tl.max(keys)
                while best > kth:
                    worst = tl.argmin(running, axis=0)
                    running = tl.where(slots == worst, best, running)
                    keys = tl.where(keys == best, KEY_EMPTY, keys)
                    best = tl.max(keys)
                    kth = tl.min(running)
            kth = tl.min(running)

    running = tl.where(running == KEY_FULL, KEY_EMPTY, running)
    out = keys_out_ptr + (row * num_splits + split) * K_PAD
    tl.store(out + slots, running)


@triton.jit
def fused_topk_kernel(
    hidden_ptr,
    items_ptr,
    seen_ptr,
    keys_out_ptr,
    B,
    V,
    D,
    K,
    stride_hidden_b,
    stride_hidden_d,
    stride_items_v,
    stride_items_d,
    stride_seen_b,
    items_per_split,
    SEEN_LEN: tl.constexpr,
    LOG_SEEN: tl.constexpr,
    LOG_K: tl.constexpr,
    LOG_BLOCK_B: tl.constexpr,
    LOG_BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MAX_EXTRACT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Write the masked top-K keys of hidden @ items.T for a block of rows.

    Grid: (cdiv(B, BLOCK_B), SPLITS). Program (row block, split) computes scores
    tile by tile, [BLOCK_B, BLOCK_N] at a time with fp32 accumulation, over items
    [split * items_per_split, (split + 1) * items_per_split), so the [B, V] score
    matrix never exists in memory. Output as in masked_topk_kernel. UPCAST
    converts the operands to fp32 before tl.dot (exact for 16-bit inputs). The
    dispatcher sets it for bf16 in the interpreter, whose dot multiplies the raw
    uint16 storage of bf16 (triton 3.9).
    """
    K_PAD: tl.constexpr = 2**LOG_K
    BLOCK_B: tl.constexpr = 2**LOG_BLOCK_B
    BLOCK_N: tl.constexpr = 2**LOG_BLOCK_N
    block = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    start = split.to(tl.int64) * items_per_split
    end = tl.minimum(start + items_per_split, V)

    rows = block.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    row_ok = rows < B
    lanes = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    slots = tl.arange(0, K_PAD)[None, :]  # [1, K_PAD]
    hidden_rows = hidden_ptr + rows[:, None] * stride_hidden_b  # [BLOCK_B, 1]
    row_seen = seen_ptr + rows[:, None] * stride_seen_b  # [BLOCK_B, 1]

    running = tl.full([BLOCK_B, K_PAD], KEY_EMPTY, tl.int64)
    running = tl.where(slots < K, running, KEY_FULL)
    kth = tl.min(running, axis=1)  # [BLOCK_B]
    for tile_start in range(start, end, BLOCK_N):
        cols = tile_start + lanes  # [BLOCK_N] int64 item ids
        col_ok = cols < end
        item_cols = items_ptr + cols[None, :] * stride_items_v  # [1, BLOCK_N]
        acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
        for d_start in range(0, D, BLOCK_D):
            d = d_start + dims
            d_ok = d < D
            h = tl.load(
                hidden_rows + d[None, :] * stride_hidden_d,
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )  # [BLOCK_B, BLOCK_D]
            w = tl.load(
                item_cols + d[:, None] * stride_items_d,
                mask=d_ok[:, None] & col_ok[None, :],
                other=0.0,
            )  # [BLOCK_D, BLOCK_N]
            if UPCAST:
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(h, w, acc, input_precision=INPUT_PRECISION)

        ids32 = tl.broadcast_to(cols.to(tl.int32)[None, :], [BLOCK_B, BLOCK_N])
        keys = _encode_keys(acc, ids32)  # [BLOCK_B, BLOCK_N]
        keys = tl.where(row_ok[:, None] & col_ok[None, :], keys, KEY_EMPTY)
        # The block takes the slow path when any of its rows can improve.
        best = tl.max(keys, axis=1)  # [BLOCK_B]
        if tl.max((best > kth).to(tl.int32)) > 0:
            candidate = keys > kth[:, None]
            seen = _is_seen(row_seen, ids32, candidate, SEEN_LEN, LOG_SEEN)
            keys = tl.where(candidate & ~seen, keys, KEY_EMPTY)
            count = tl.sum((keys > kth[:, None]).to(tl.int32), axis=1)  # [BLOCK_B]
            if tl.max(count) > MAX_EXTRACT:
                running = _merge_bitonic(running, keys, LOG_K, LOG_BLOCK_N, LOG_BLOCK_B)
            else:
                # Few candidates: per row, move the best one into the worst slot.
                best = tl.max(keys, axis=1)
                improves = best > kth
                while tl.max(improves.to(tl.int32)) > 0:
                    worst = tl.argmin(running, axis=1)  # [BLOCK_B]
                    hit = improves[:, None] & (slots == worst[:, None])
                    running = tl.where(hit, best[:, None], running)
                    keys = tl.where(keys == best[:, None], KEY_EMPTY, keys)
                    best = tl.max(keys, axis=1)
                    kth = tl.min(running, axis=1)
                    improves = best > kth
            kth = tl.min(running, axis=1)

    running = tl.where(running == KEY_FULL, KEY_EMPTY, running)
    out = keys_out_ptr + (rows[:, None] * num_splits + split) * K_PAD
    tl.store(out + slots, running, mask=row_ok[:, None])  # [BLOCK_B, K_PAD]
