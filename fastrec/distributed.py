"""Process-group set-up for ``torchrun``: NCCL on CUDA, gloo on the CPU.

Without the torchrun environment variables (WORLD_SIZE unset or 1) everything here
is a no-op and the run is a single process.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import FastrecError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0


def _env_int(name: str) -> int:
    text = os.environ.get(name)
    if text is None:
        raise FastrecError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {name} is not; start "
            "multi-process runs with torchrun, which sets RANK, LOCAL_RANK and "
            "WORLD_SIZE"
        )
    try:
        return int(text)
    except ValueError:
        raise FastrecError(f"{name}={text!r} is not an integer") from None


def env_info() -> DistInfo:
    """Read this process's place from torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world_size = int(text)
    except ValueError:
        raise FastrecError(f"WORLD_SIZE={text!r} is not an integer") from None
    if world_size <= 1:
        return DistInfo()
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise FastrecError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def init_process_group(info: DistInfo, device: torch.device) -> bool:
    """Join the process group of ``info`` with the backend of ``device``.

    NCCL serves CUDA devices and gloo the CPU. The rendezvous comes from torchrun's
    MASTER_ADDR and MASTER_PORT. A group that the caller set up already is kept,
    which lets tests start ranks with their own rendezvous. Return whether this
    call created the group (and so should destroy it).
    """
    if info.world_size <= 1:
        return False
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (info.rank, info.world_size):
            raise RuntimeError(
                f"the process group has rank {dist.get_rank()} of "
                f"{dist.get_world_size()}, but RANK={info.rank} and "
                f"WORLD_SIZE={info.world_size}"
            )
        return False
    if device.type == "cuda":
        # device_id binds the group to this rank's GPU, so barriers and object
        # collectives never guess the device.
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return True


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel on ``device``.

    Buffers are not broadcast before each forward pass: the model's buffers are
    constant lookup tables (item genres, user codes, blocked items), identical on
    every rank from the start.
    """
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers to forward_sync_buffers.
    if "forward_sync_buffers" in inspect.signature(ddp).parameters:
        options = {"forward_sync_buffers": False}
    else:
        options = {"broadcast_buffers": False}
    return ddp(module, device_ids=device_ids, **options)


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks in place (a no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_gather_object(value: Any) -> list[Any]:
    """Return every rank's ``value`` (picklable), in rank order."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``value`` (picklable) on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class StopVote:
    """Agree across ranks on the step after which training stops for a signal.

    A signal can reach the ranks at different steps, or reach only some of them (a
    node that is preempted). Every rank calls ``poll`` once per step with the signal
    it has received, if any. The votes travel in an asynchronous all-reduce (max)
    of a CPU tensor on a separate gloo group, so voting never synchronizes with
    the GPU. ``poll`` returns the outcome of the previous step's vote, which is
    the same on every rank, so all ranks stop after the same step: the step after
    the first signal. In a single process ``poll`` returns its argument at once.
    """

    def __init__(self) -> None:
        self._group = dist.new_group(backend="gloo") if is_distributed() else None
        self._votes = torch.zeros(1, dtype=torch.int64)
        self._pending: Any = None

    def poll(self, signum: int | None) -> int | None:
        """Vote ``signum`` and return the signal agreed on at the previous step."""
        if self._group is None:
            return signum
        agreed = self._collect()
        self._votes.fill_(signum or 0)
        self._pending = dist.all_reduce(
            self._votes, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return agreed

    def settle(self, signum: int | None) -> int | None:
        """Vote ``signum`` and wait for every rank; return any signal received."""
        if self._group is None:
            return signum
        agreed = self._collect()
        self._votes.fill_(signum or 0)
        dist.all_reduce(self._votes, op=dist.ReduceOp.MAX, group=self._group)
        return agreed or int(self._votes.item()) or None

    def _collect(self) -> int | None:
        if self._pending is None:
            return None
        self._pending.wait()
        self._pending = None
        return int(self._votes.item()) or None
