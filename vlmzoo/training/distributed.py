"""The process group a run belongs to: one process, or several started by ``torchrun``.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; a run started that way joins the group
(gloo on CPU, NCCL on GPUs). Everything else in training asks this object for its rank and for sums
over all processes, so the single-process path runs the very same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vlmzoo.devices import resolve_device


@dataclass
class ProcessGroup:
    """Rank, world size and device of this process; ``active`` when a torch.distributed group is in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    active: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and progress (rank 0)."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Sum each value over all processes (float64, on the process group's device)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str | None = "auto") -> ProcessGroup:
    """This process's place: joins torchrun's group when launched by it (gloo on CPU, NCCL on CUDA).

    ``"auto"`` (or None): the process's own GPU (``LOCAL_RANK``) when CUDA is present, else MPS, XPU, CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    automatic = device is None or str(device).strip().lower() == "auto"
    resolved = resolve_device(device, default="auto")
    if resolved.type == "cuda" and (automatic or resolved.index is None):
        resolved = torch.device("cuda", local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size <= 1:
        return ProcessGroup(device=resolved)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=resolved if resolved.type == "cuda" else None)
        owns = True
    return ProcessGroup(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=resolved,
        active=True,
        owns_group=owns,
    )
