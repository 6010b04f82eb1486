"""Training batches: resumable, sharded over ranks, grouped by aspect ratio."""

import itertools

import pytest
import torch

from tardistill.engine.sampling import ResumableBatchSampler, aspect_ratio_groups


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_one_group_keeps_the_single_process_order():
    # Consecutive runs of the seeded permutation, last partial batch dropped: the order of runs
    # made before sharding and grouping existed, so they resume onto the same batches.
    order = torch.randperm(10, generator=torch.Generator().manual_seed(4 * 100_003)).tolist()
    assert take(ResumableBatchSampler(10, 3, seed=4), 3) == [order[0:3], order[3:6], order[6:9]]


def test_two_ranks_split_the_global_batch_of_one_process():
    single = take(ResumableBatchSampler(10, 4, seed=1), 7)  # crosses epoch boundaries
    ranks = [take(ResumableBatchSampler(10, 2, seed=1, rank=r, world_size=2), 7) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == single
    assert all(not set(a) & set(b) for a, b in zip(*ranks))  # no image on both ranks in a step


def test_sharded_and_grouped_stream_resumes_where_it_stopped():
    groups = [0, 1] * 7  # 14 images, 2 aspect-ratio groups
    make = lambda start: ResumableBatchSampler(14, 2, seed=3, rank=1, world_size=2, group_ids=groups,  # noqa: E731
                                               start_step=start)
    batches = take(make(0), 8)  # 2 batches per group and epoch: 4 epochs
    assert take(make(5), 3) == batches[5:]


def test_every_global_batch_holds_one_aspect_ratio_group():
    sizes = [(640, 480), (480, 640), (500, 500), (1000, 400)] * 6
    dataset = ImageSizes(sizes)
    groups = aspect_ratio_groups(dataset)
    assert len(set(groups)) == 4  # landscape, portrait, square, wide
    per_rank = [take(ResumableBatchSampler(24, 3, seed=0, rank=r, world_size=2, group_ids=groups), 8)
                for r in (0, 1)]
    for a, b in zip(*per_rank):
        assert len({groups[i] for i in a + b}) == 1


def test_aspect_ratio_buckets_follow_torchvision():
    # Bin edges 2^(i/3), i = -3..3: 0.5, 0.63, 0.79, 1, 1.26, 1.59, 2; width / height picks the bucket.
    dataset = ImageSizes([(100, 100), (125, 100), (130, 100), (300, 100), (100, 300)])
    assert aspect_ratio_groups(dataset) == [4, 4, 5, 7, 0]
    assert aspect_ratio_groups([1, 2, 3]) is None  # no image sizes: no grouping


def test_too_few_images_for_the_global_batch_are_refused():
    with pytest.raises(ValueError, match="fewer than batch_size=3 x 2 ranks"):
        ResumableBatchSampler(5, 3, world_size=2, rank=1)
    with pytest.raises(ValueError, match="no aspect-ratio group"):
        ResumableBatchSampler(6, 2, world_size=2, group_ids=[0, 0, 0, 1, 1, 1])


class ImageSizes:
    """A dataset stub that knows only its images' sizes, as the COCO and VOC readers do."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def image_sizes(self):
        return list(self.sizes)
