"""Batches for iteration-based training that resume exactly where they stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless shuffled batches; batch t depends only on (seed, t), so a resumed run sees the same data.

    Each epoch is a fresh permutation seeded by (seed, epoch). The last incomplete batch of an epoch is
    dropped so that every step has `batch_size` images.
    """

    def __init__(self, dataset_size: int, batch_size: int, *, seed: int = 0, start_step: int = 0) -> None:
        if dataset_size < batch_size:
            raise ValueError(f"dataset has {dataset_size} images, fewer than batch_size={batch_size}")
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.seed, self.start_step = seed, start_step
        self.batches_per_epoch = dataset_size // batch_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch, position = divmod(step, self.batches_per_epoch)
        while True:
            order = self._permutation(epoch)
            for index in range(position, self.batches_per_epoch):
                yield order[index * self.batch_size:(index + 1) * self.batch_size].tolist()
            epoch, position = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a length for progress reporting
        return 2**62
