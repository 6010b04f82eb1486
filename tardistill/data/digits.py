"""A second built-in detection set of a different kind: handwritten digits on textured canvases.

The digits are scikit-learn's bundled `load_digits` (1,797 handwritten 8x8 scans, no download),
scaled to 12-48 px and pasted in a random colour over the benchmark's textured backgrounds and
clutter. Ten classes, "0" to "9", told apart by handwriting rather than by geometric outline. The
scans are split by index before pasting (train: 80%, val: 10%, test: 10%), so validation and test
images show scans the detector never trained on. Written in COCO format (`data.format: coco`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from tardistill.data.synthetic import SPLITS, blend, draw_background, draw_clutter, object_color, write_coco_dataset

DIGIT_CLASSES = tuple(str(d) for d in range(10))
MAX_OVERLAP = 0.3  # a digit may not cover more than this share of an earlier digit's box


@functools.lru_cache(maxsize=1)
def _scans() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn; nothing is downloaded

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def scan_indices(split: str) -> np.ndarray:
    """The scans a split draws from: index % 10 is 0 for val, 5 for test, anything else for train."""
    count = len(_scans()[1])
    remainder = np.arange(count) % 10
    chosen = {"train": ~np.isin(remainder, (0, 5)), "val": remainder == 0, "test": remainder == 5}[split]
    return np.flatnonzero(chosen)


def _digit_sprite(scan: np.ndarray, height: int, width: int, image_size: int, top: int, left: int):
    """The scan scaled to (height, width) as a blend() sprite: alpha from the ink, clipped to the image."""
    ink = Image.fromarray((scan * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    alpha = np.clip((np.asarray(ink, np.float32) / 255.0 - 0.3) * 2.5, 0.0, 1.0)
    return alpha, np.s_[top:top + height, left:left + width]


def _overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    for other in boxes:
        inter = np.clip(np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]), 0, None).prod()
        if inter > MAX_OVERLAP * np.prod(other[2:] - other[:2]):
            return True
    return False


def render_digits_image(seed, split, index, *, image_size=128):
    """Render one image; returns (uint8 [S,S,3], list of (label 1..10, xyxy box))."""
    rng = np.random.default_rng([seed, 100 + SPLITS.index(split), index])
    scans, targets = _scans()
    pool = scan_indices(split)
    canvas = draw_background(rng, image_size)
    for _ in range(int(rng.integers(3, 9))):
        blend(canvas, draw_clutter(rng, image_size), rng.uniform(0, 1, 3))
    objects, boxes = [], []
    wanted = int(rng.integers(2, 7))
    for _ in range(3 * wanted):
        if len(objects) == wanted:
            break
        height = int(round(math.exp(rng.uniform(math.log(12), math.log(min(48, image_size // 2))))))
        width = max(6, int(round(height * rng.uniform(0.7, 1.0))))
        top, left = int(rng.integers(0, image_size - height + 1)), int(rng.integers(0, image_size - width + 1))
        scan = int(rng.choice(pool))
        sprite = _digit_sprite(scans[scan], height, width, image_size, top, left)
        rows, cols = np.nonzero(sprite[0] >= 0.5)
        if len(rows) < 6:
            continue
        box = np.array([left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1],
                       dtype=np.float64)
        if _overlaps(box, boxes):
            continue
        blend(canvas, sprite, object_color(rng, canvas, sprite))
        boxes.append(box)
        objects.append((int(targets[scan]) + 1, box))
    canvas += rng.normal(0, rng.uniform(0.01, 0.04), canvas.shape).astype(np.float32)
    return (canvas.clip(0, 1) * 255 + 0.5).astype(np.uint8), objects


def generate_digits(out_dir, *, seed=0, num_train=2000, num_val=150, num_test=300, image_size=128,
                    workers=2) -> dict:
    """Write the digits set as PNGs plus COCO JSON under out_dir (the layout of `generate_synthetic`)."""
    return write_coco_dataset(out_dir, render=render_digits_image, classes=DIGIT_CLASSES,
                              description="tardistill handwritten digits (scikit-learn load_digits)",
                              seed=seed, counts=dict(zip(SPLITS, (num_train, num_val, num_test))),
                              image_size=image_size, workers=workers, supercategory="digit")
