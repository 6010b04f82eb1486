"""Paired image/target transforms: each takes and returns (image [3,H,W] float, target dict)."""

import torch
from torchvision import transforms as tv_transforms
from torchvision.transforms import functional as tv_functional


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability p, and the boxes with it."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, target):
        # torch's RNG, so DataLoader worker seeding makes the flips reproducible.
        if torch.rand(()) >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"]
        flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                               boxes[:, 3]], dim=1)
        return image.flip(-1), {**target, "boxes": flipped}

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class PhotometricJitter:
    """Randomly change brightness, contrast, saturation and hue; boxes are untouched."""

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02):
        self.jitter = tv_transforms.ColorJitter(brightness=brightness, contrast=contrast,
                                                saturation=saturation, hue=hue)

    def __call__(self, image, target):
        return self.jitter(image), target

    def __repr__(self) -> str:
        return f"PhotometricJitter({self.jitter!r})"


class Resize:
    """Scale so the short side is min_size unless that makes the long side exceed max_size."""

    def __init__(self, min_size, max_size):
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, image, target):
        height, width = image.shape[-2:]
        scale = min(self.min_size / min(height, width), self.max_size / max(height, width))
        new_height, new_width = round(height * scale), round(width * scale)
        image = tv_functional.resize(image, [new_height, new_width], antialias=True)
        # Per-axis ratios of the rounded sizes keep boxes aligned with the resized pixels.
        ratios = torch.tensor([new_width / width, new_height / height] * 2,
                              dtype=target["boxes"].dtype)
        return image, {**target, "boxes": target["boxes"] * ratios}

    def __repr__(self) -> str:
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


def build_train_transforms(*, flip=True, jitter=True, resize=None) -> Compose:
    """Training augmentation; resize is None or (min_size, max_size)."""
    steps = [Resize(*resize)] if resize is not None else []
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    if jitter:
        steps.append(PhotometricJitter())
    return Compose(steps)


def build_eval_transforms(resize=None) -> Compose:
    """Evaluation transforms: only the optional fixed-size resize."""
    return Compose([Resize(*resize)] if resize is not None else [])
