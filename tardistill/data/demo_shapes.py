"""The demo's set (`make demo`): the benchmark's look, made easy enough to learn in minutes on a CPU.

The benchmark (data/synthetic.py) is built to be hard: ten classes in look-alike pairs, 2-8 objects
from 8 px to half the image, heavy clutter. Trained from scratch for the few hundred steps a
15-minute demo affords, every model stays at the floor there (about 1 AP). This set keeps the
benchmark's backgrounds, clutter kinds and colours but takes one class of four pairs, so no two
classes look alike, and draws 1-3 larger objects (14-32 px on 64 px images) over light clutter.
"""

from __future__ import annotations

import numpy as np

from tardistill.data.synthetic import SPLITS, SYNTH_SHAPES, SceneStyle, render_scene, write_coco_dataset

DEMO_CLASSES = ("circle", "square_frame", "triangle_up", "plus")
DEMO_STYLE = SceneStyle(objects=(1, 4), min_extent=14.0, max_extent=0.5, clutter=(0, 3), thin_clutter=(0, 2))
DEMO_SHAPES = {name: SYNTH_SHAPES[name] for name in DEMO_CLASSES}
DEMO_IMAGE_SIZE = 64


def render_demo_image(seed, split, index, *, image_size=DEMO_IMAGE_SIZE):
    """Render one image; returns (uint8 [S,S,3], list of (label 1..4, xyxy box))."""
    # 60 + split: a random stream apart from the benchmark's and the pretraining set's
    rng = np.random.default_rng([seed, 60 + SPLITS.index(split), index])
    return render_scene(rng, image_size, DEMO_SHAPES, DEMO_STYLE)


def generate_demo_shapes(out_dir, *, seed=0, num_train=1500, num_val=150, num_test=300,
                         image_size=DEMO_IMAGE_SIZE, workers=2) -> dict:
    """Write the demo set as PNGs plus COCO JSON under out_dir (the layout of `generate_synthetic`)."""
    return write_coco_dataset(out_dir, render=render_demo_image, classes=DEMO_CLASSES,
                              description="tardistill demo shapes", seed=seed,
                              counts=dict(zip(SPLITS, (num_train, num_val, num_test))),
                              image_size=image_size, workers=workers)
