"""The pretraining set that stands in for ImageNet: detection of eight shapes that no benchmark uses.

None of the eight is a class of the built-in benchmark or of the digits set, so a backbone
pretrained here has seen neither detection task, as an ImageNet backbone has not seen COCO. The
images share the benchmark's look (textured backgrounds, clutter, low-contrast objects), as natural
images share the look of detection data.

Why detection and not classification: a classifier trained from scratch on these cluttered images
stayed at chance for 400-600 steps in probes (multi-label and single-label, quarter-width
ResNet-18, 64 px), while a detector's per-box losses give its backbone a signal from the first
steps. The detector's checkpoint then serves as `model.backbone_weights`: only its backbone body
(torchvision's ResNet names under `backbone.body.`) is loaded, as from an ImageNet file.
"""

from __future__ import annotations

import functools

import numpy as np

from tardistill.data.synthetic import SPLITS, regular_polygon, render_scene, write_coco_dataset

PRETRAIN_CLASSES = ("kite", "pentagon", "arrow", "l_shape", "t_shape", "crescent", "trapezoid", "semicircle")


def _polygon(points: list[tuple[float, float]]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


def _semicircle() -> np.ndarray:
    angles = np.linspace(0, np.pi, 20)
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


OUTLINES = {
    "kite": lambda: [(_polygon([(0, -1), (0.6, -0.3), (0, 1), (-0.6, -0.3)]), 1)],
    "pentagon": lambda: [(regular_polygon(5), 1)],
    "arrow": lambda: [(_polygon([(-1, -0.25), (0.2, -0.25), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.25),
                                 (-1, 0.25)]), 1)],
    "l_shape": lambda: [(_polygon([(-1, -1), (-0.3, -1), (-0.3, 0.4), (1, 0.4), (1, 1), (-1, 1)]), 1)],
    "t_shape": lambda: [(_polygon([(-1, -1), (1, -1), (1, -0.4), (0.3, -0.4), (0.3, 1), (-0.3, 1),
                                   (-0.3, -0.4), (-1, -0.4)]), 1)],
    # the shifted inner disc is drawn with fill 0, so it cuts the bite out of the outer one
    "crescent": lambda: [(regular_polygon(32), 1), (regular_polygon(32) * 0.85 + [0.4, 0.0], 0)],
    "trapezoid": lambda: [(_polygon([(-1, 1), (1, 1), (0.45, -1), (-0.45, -1)]), 1)],
    "semicircle": lambda: [(_semicircle(), 1)],
}


def _any_rotation(name: str, rng: np.random.Generator) -> tuple[list, float]:
    return OUTLINES[name](), rng.uniform(0, 360)


PRETRAIN_SHAPES = {name: functools.partial(_any_rotation, name) for name in PRETRAIN_CLASSES}


def render_pretrain_image(seed, split, index, *, image_size=128):
    """Render one image; returns (uint8 [S,S,3], list of (label 1..8, xyxy box))."""
    # 50 + split: random streams apart from the benchmark's, so no image repeats one of its scenes
    rng = np.random.default_rng([seed, 50 + SPLITS.index(split), index])
    return render_scene(rng, image_size, PRETRAIN_SHAPES)


def generate_pretrain_shapes(out_dir, *, seed=0, num_train=2000, num_val=150, num_test=150, image_size=128,
                             workers=2) -> dict:
    """Write the pretraining set as PNGs plus COCO JSON under out_dir (the layout of `generate_synthetic`)."""
    return write_coco_dataset(out_dir, render=render_pretrain_image, classes=PRETRAIN_CLASSES,
                              description="tardistill pretraining shapes", seed=seed,
                              counts=dict(zip(SPLITS, (num_train, num_val, num_test))),
                              image_size=image_size, workers=workers)
