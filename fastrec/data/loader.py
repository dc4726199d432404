"""Batch loader over the memory-mapped window store.

Each batch is gathered with one vectorized ``np.take`` per column; there is no
per-sample ``__getitem__``. On CUDA the gather writes into pinned staging buffers,
and a background thread copies them to the device with ``non_blocking`` copies on
a side stream, a bounded number of batches ahead. A staging buffer is refilled only
after the event recorded behind its copy has completed. On the CPU the same thread
gathers into fresh arrays and no pinning or streams are involved.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..profiling import stage
from .store import PartView

TRAIN_COLUMNS = ("items", "ratings", "user", "target", "target_rating")
# "seen" is the padded history matrix of evaluation rows (item ids, -1 padding).
EVAL_COLUMNS = ("items", "user", "target", "seen")

_DONE = object()


class BatchLoader:
    """Iterate over one part of the store in batches of tensors on ``device``.

    ``rows`` limits the loader to a subset of the part's rows. Rows are shuffled per epoch from ``(seed, epoch)`` when ``shuffle`` is set; call
    ``set_epoch`` before each epoch. With ``world_size > 1`` every rank takes the
    rows ``permutation[rank::world_size]``, so each row is served to exactly one
    rank per epoch. ``equal_shards`` first drops the last ``N % world_size`` rows of
    the permutation so every rank runs the same number of steps, as DDP requires.
    """

    def __init__(
        self,
        part: PartView,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = False,
        device: str | torch.device = "cpu",
        prefetch: int = 2,
        columns: Sequence[str] = TRAIN_COLUMNS,
        rows: np.ndarray | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.part = part
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.equal_shards = equal_shards
        self.device = torch.device(device)
        self.prefetch = prefetch
        self.columns = tuple(columns)
        # The rows this loader serves; all of the part unless a subset is given.
        self.rows = np.arange(len(part)) if rows is None else np.asarray(rows)
        self.epoch = 0
        self._cuda = self.device.type == "cuda"
        self._staging: list[dict[str, torch.Tensor]] = []
        self._staging_events: list[torch.cuda.Event | None] = []

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch``."""
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """Return this rank's row order for the current epoch."""
        n = len(self.rows)
        if self.shuffle:
            rows = self.rows[
                np.random.default_rng((self.seed, self.epoch)).permutation(n)
            ]
        else:
            rows = self.rows
        if self.equal_shards:
            rows = rows[: n - n % self.world_size]
        return rows[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.rows)
        if self.equal_shards:
            n -= n % self.world_size
        n = len(range(self.rank, n, self.world_size))
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def _batches(self, start_batch: int = 0) -> Iterator[np.ndarray]:
        rows = self.indices()
        for b in range(start_batch, len(self)):
            chunk = rows[b * self.batch_size : (b + 1) * self.batch_size]
            # Sorted rows read the mapped file in order; order inside a batch is free.
            yield np.sort(chunk)

    def _gather_host(
        self, rows: np.ndarray, slot: int | None
    ) -> dict[str, torch.Tensor]:
        """Gather ``rows`` of every column into host tensors (pinned staging on CUDA)."""
        out = {}
        n = len(rows)
        for name in self.columns:
            if name == "seen":
                seen = torch.from_numpy(self.part.history_matrix(rows))
                out[name] = seen.pin_memory() if self._cuda else seen
                continue
            source = getattr(self.part, name)
            if slot is None:
                out[name] = torch.from_numpy(np.take(source, rows, axis=0))
            else:
                staging = self._staging[slot][name][:n]
                np.take(source, rows, axis=0, out=staging.numpy())
                out[name] = staging
        return out

    def _ensure_staging(self, slots: int) -> None:
        if len(self._staging) >= slots:
            return
        for _ in range(slots - len(self._staging)):
            buffers = {}
            for name in self.columns:
                if name == "seen":
                    continue
                source = getattr(self.part, name)
                shape = (self.batch_size, *source.shape[1:])
                dtype = torch.from_numpy(source[:0].copy()).dtype
                buffers[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
            self._staging.append(buffers)
            self._staging_events.append(None)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iterate()

    def iterate(self, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the epoch's batches from ``start_batch`` on (to resume an epoch)."""
        if self.prefetch <= 0:
            for rows in self._batches(start_batch):
                host = self._gather_host(rows, None)
                yield {k: v.to(self.device) for k, v in host.items()}
            return
        yield from self._iterate_prefetched(start_batch)

    def _iterate_prefetched(
        self, start_batch: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        slots = self.prefetch + 2
        if self._cuda:
            self._ensure_staging(slots)
            stream = torch.cuda.Stream(device=self.device)

        def produce() -> None:
            try:
                for step, rows in enumerate(self._batches(start_batch)):
                    if stop.is_set():
                        return
                    if not self._cuda:
                        ready.put((self._gather_host(rows, None), None))
                        continue
                    slot = step % slots
                    # The slot's previous copy must finish before its buffers are reused.
                    event = self._staging_events[slot]
                    if event is not None:
                        event.synchronize()
                    host = self._gather_host(rows, slot)
                    with stage("h2d_copy"), torch.cuda.stream(stream):
                        batch = {
                            k: v.to(self.device, non_blocking=True)
                            for k, v in host.items()
                        }
                        event = torch.cuda.Event()
                        event.record(stream)
                    self._staging_events[slot] = event
                    ready.put((batch, event))
            except BaseException as error:  # handed to the consumer and raised there
                ready.put((error, None))
                return
            ready.put((_DONE, None))

        worker = threading.Thread(target=produce, name="fastrec-loader", daemon=True)
        worker.start()
        try:
            while True:
                batch, event = ready.get()
                if batch is _DONE:
                    break
                if isinstance(batch, BaseException):
                    raise batch
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for tensor in batch.values():
                        # Tell the caching allocator these side-stream tensors are used here.
                        tensor.record_stream(current)
                yield batch
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()
