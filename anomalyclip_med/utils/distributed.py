"""
torch.distributed for ``torchrun``: set up only when the launcher says there are several processes (WORLD_SIZE > 1,
as MONAI bundles do), shard work round-robin over ranks, and gather the results on every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistributedContext"]

T = TypeVar("T")


@dataclass
class DistributedContext:
    """
    The process's place in a (possibly single-process) run.

    Use :meth:`from_env` as a context manager: it initialises the process group under ``torchrun`` (NCCL when the
    requested device is CUDA, gloo otherwise) and destroys it on exit; in a plain run it is a no-op with rank 0 of 1.

    Attributes:
        rank: this process's rank.
        world_size: number of processes.
        device: the torch device this process should use (``cuda:LOCAL_RANK`` for NCCL runs).
        initialised: whether this context created a process group.
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    initialised: bool = False

    @classmethod
    def from_env(cls, device: str = "cpu") -> DistributedContext:
        """
        Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by ``torchrun``) and join the process group.

        Args:
            device: the device asked for ("cpu", "cuda", "cuda:1"); with several processes and a CUDA device, each
                process takes ``cuda:LOCAL_RANK`` and the backend is NCCL.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(local_rank)
            device, backend = f"cuda:{local_rank}", "nccl"
        else:
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, initialised=True)

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes reports."""
        return self.rank == 0

    def shard(self, items: list[T]) -> list[tuple[int, T]]:
        """This rank's share of ``items`` as ``(index, item)``: every ``world_size``-th item from ``rank``, so
        shards stay balanced when items are sorted by size or class."""
        return [(i, items[i]) for i in range(self.rank, len(items), self.world_size)]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for all ranks (no-op in a single process)."""
        if self.world_size > 1:
            dist.barrier()

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(self, *exc) -> None:
        if self.initialised and dist.is_initialized():
            dist.destroy_process_group()
