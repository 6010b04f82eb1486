"""Paired transforms keep boxes consistent with the image."""

import pytest
import torch

from tardistill.data import (
    Compose,
    PhotometricJitter,
    RandomHorizontalFlip,
    Resize,
    build_eval_transforms,
    build_train_transforms,
)


def _sample(boxes=((2.0, 1.0, 5.0, 4.0),), height=6, width=10):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.ones(len(boxes), dtype=torch.int64), "image_id": 3}
    return image, target


def test_flip_matches_hand_computed_box():
    image, target = _sample()
    flipped_image, flipped = RandomHorizontalFlip(p=1.0)(image, target)
    assert flipped["boxes"].tolist() == [[5.0, 1.0, 8.0, 4.0]]  # x' = 10 - x
    assert torch.equal(flipped_image, image.flip(-1))
    assert flipped["labels"].tolist() == [1] and flipped["image_id"] == 3
    assert target["boxes"].tolist() == [[2.0, 1.0, 5.0, 4.0]]  # input untouched


def test_flip_with_p_zero_is_identity():
    image, target = _sample()
    out_image, out = RandomHorizontalFlip(p=0.0)(image, target)
    assert out_image is image and out is target


def test_resize_scales_boxes_exactly():
    image, target = _sample()
    resized_image, resized = Resize(min_size=12, max_size=100)(image, target)
    assert resized_image.shape == (3, 12, 20)
    assert resized["boxes"].tolist() == [[4.0, 2.0, 10.0, 8.0]]


def test_resize_respects_max_size():
    image, target = _sample()
    resized_image, resized = Resize(min_size=60, max_size=20)(image, target)
    assert resized_image.shape == (3, 12, 20)
    assert resized["boxes"].tolist() == [[4.0, 2.0, 10.0, 8.0]]


def test_jitter_changes_colour_not_boxes():
    torch.manual_seed(0)
    image, target = _sample()
    jittered_image, jittered = PhotometricJitter(0.5, 0.5, 0.5, 0.1)(image, target)
    assert jittered_image.shape == image.shape
    assert not torch.equal(jittered_image, image)
    assert torch.equal(jittered["boxes"], target["boxes"])


@pytest.mark.parametrize("transform", [
    RandomHorizontalFlip(p=1.0), PhotometricJitter(), Resize(12, 100),
    build_train_transforms(resize=(12, 100)), build_eval_transforms(resize=(12, 100)),
])
def test_empty_target_survives(transform):
    image, target = _sample(boxes=())
    _, out = transform(image, target)
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (0,)


def test_builders_compose_expected_steps():
    train = build_train_transforms(flip=True, jitter=False, resize=(8, 16))
    assert [type(t) for t in train.transforms] == [Resize, RandomHorizontalFlip]
    assert build_eval_transforms().transforms == []
    image, target = _sample()
    out_image, out = Compose([])(image, target)
    assert out_image is image and out is target
