"""Which examples each process trains on at each step: a distributed sampler over a global batch.

Step ``s`` takes the ``batch_size`` examples at positions ``s * batch_size ...`` of a stream made of
seeded shuffles of the dataset, one per epoch. Each process takes every ``world_size``-th of them and
splits its share into ``grad_accumulation`` micro-batches. The order depends only on the seed and the
step, so one process or several see the same global batch, and a resumed run continues exactly where
it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vlmzoo.training.data import EpochIndex


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """Micro-batches of dataset indices for one process, for steps ``start_step`` to ``max_steps - 1``."""

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        grad_accumulation: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
        max_steps: int,
        tag_epochs: bool = False,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("the dataset is empty")
        if batch_size % (world_size * grad_accumulation):
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of processes x grad_accumulation = "
                f"{world_size} x {grad_accumulation}, so every micro-batch holds the same number of examples"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.grad_accumulation = grad_accumulation
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps
        #: Yield `EpochIndex` ``(index, epoch)`` items instead of plain indices (to shuffle records' objects).
        self.tag_epochs = tag_epochs
        self._epoch: tuple[int, list[int]] | None = None

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.world_size * self.grad_accumulation)

    def _order(self, epoch: int) -> list[int]:
        if self._epoch is None or self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch = (epoch, torch.randperm(self.dataset_size, generator=generator).tolist())
        return self._epoch[1]

    def global_batch(self, step: int) -> list[int]:
        """The dataset indices of step ``step``, over all processes."""
        start = step * self.batch_size
        return [
            self._order(position // self.dataset_size)[position % self.dataset_size]
            for position in range(start, start + self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        size = self.micro_batch_size
        for step in range(self.start_step, self.max_steps):
            mine = self.global_batch(step)
            if self.tag_epochs:
                first = step * self.batch_size
                mine = [EpochIndex(index, (first + k) // self.dataset_size) for k, index in enumerate(mine)]
            mine = mine[self.rank :: self.world_size]
            for k in range(self.grad_accumulation):
                yield mine[k * size : (k + 1) * size]

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.grad_accumulation
