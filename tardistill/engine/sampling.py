"""Batches for iteration-based training that resume exactly where they stopped, sharded over ranks."""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless shuffled batches; batch t depends only on (seed, t), so a resumed run sees the same data.

    Each epoch is a fresh permutation seeded by (seed, epoch), walked in order: an image joins the
    batch being filled for its aspect-ratio group (`group_ids`), and a batch is complete with
    `batch_size x world_size` images, the global batch. Rank r takes its slice r of it, so the
    sequence of global batches does not depend on how many ranks share it: 2 ranks x batch 1 see
    what 1 process x batch 2 sees. With one group (the default; every square dataset) the batches
    are simply consecutive runs of the permutation. Whatever is left in a group at the end of an
    epoch is dropped, so that every step has full batches.
    """

    def __init__(self, dataset_size: int, batch_size: int, *, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, group_ids: Sequence[int] | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.global_batch = batch_size * world_size
        if dataset_size < self.global_batch:
            raise ValueError(f"dataset has {dataset_size} images, fewer than batch_size={batch_size}"
                             + (f" x {world_size} ranks" if world_size > 1 else ""))
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.group_ids = list(group_ids) if group_ids is not None else [0] * dataset_size
        if len(self.group_ids) != dataset_size:
            raise ValueError(f"{len(self.group_ids)} group ids for {dataset_size} images")
        sizes = Counter(self.group_ids)
        self.batches_per_epoch = sum(size // self.global_batch for size in sizes.values())
        if self.batches_per_epoch == 0:
            raise ValueError(f"no aspect-ratio group has batch_size x ranks = {self.global_batch} images "
                             f"(group sizes {dict(sizes)})")
        small = sum(size for size in sizes.values() if size < self.global_batch)
        if small:
            log.warning("%d images are in aspect-ratio groups smaller than one global batch (%d) and are "
                        "never trained on", small, self.global_batch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of one epoch, in the order they fill up."""
        filling: dict[int, list[int]] = {}
        batches = []
        for index in self._permutation(epoch).tolist():
            batch = filling.setdefault(self.group_ids[index], [])
            batch.append(index)
            if len(batch) == self.global_batch:
                batches.append(batch)
                filling[self.group_ids[index]] = []
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position = divmod(self.start_step, self.batches_per_epoch)
        own = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        while True:
            for batch in self._epoch_batches(epoch)[position:]:
                yield batch[own]
            epoch, position = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a length for progress reporting
        return 2**62


# torchvision's detection references: 2k+1 bin edges, spaced geometrically from 1:2 to 2:1 (k = 3).
ASPECT_RATIO_BINS = tuple(2 ** (i / 3) for i in range(-3, 4))


def aspect_ratio_groups(dataset, bins: Sequence[float] = ASPECT_RATIO_BINS) -> list[int] | None:
    """The aspect-ratio bucket (width / height against `bins`) of every image, or None when unknown.

    Read from `dataset.image_sizes()` ([(width, height)] from the annotations, so no image is
    decoded); a dataset without it is not grouped.
    """
    if not hasattr(dataset, "image_sizes"):
        return None
    return [bisect.bisect_right(bins, width / height) for width, height in dataset.image_sizes()]
