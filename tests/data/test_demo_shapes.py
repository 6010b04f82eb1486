"""The demo's easy set, and the scene style that makes it without changing the benchmark."""

import hashlib

import numpy as np

from tardistill.data import CocoDetection, synthetic_split_paths
from tardistill.data.demo_shapes import DEMO_CLASSES, generate_demo_shapes, render_demo_image
from tardistill.data.synthetic import SYNTH_CLASSES, render_image


def test_default_scene_style_draws_the_benchmark_unchanged():
    digest = hashlib.sha256()
    for index in range(3):
        digest.update(render_image(0, "train", index)[0].tobytes())
    assert digest.hexdigest()[:16] == "d5b367bdc3194202"  # the images before SceneStyle existed


def test_demo_images_hold_one_to_three_objects_of_14_to_32_px():
    counts, sides = [], []
    for index in range(60):
        pixels, objects = render_demo_image(0, "train", index)
        assert pixels.shape == (64, 64, 3)
        counts.append(len(objects))
        sides += [max(box[2] - box[0], box[3] - box[1]) for _, box in objects]
        assert all(1 <= label <= len(DEMO_CLASSES) for label, _ in objects)
    assert set(counts) == {1, 2, 3}
    assert 14 - 1e-6 <= min(sides) and max(sides) <= 32 + 1e-6


def test_demo_classes_are_one_of_each_benchmark_pair():
    pairs = [set(SYNTH_CLASSES[i:i + 2]) for i in range(0, len(SYNTH_CLASSES), 2)]
    assert all(len(pair & set(DEMO_CLASSES)) <= 1 for pair in pairs)


def test_generated_demo_set_reads_as_coco(tmp_path):
    summary = generate_demo_shapes(tmp_path, num_train=3, num_val=2, num_test=2, workers=1)
    assert summary["classes"] == list(DEMO_CLASSES) and summary["image_size"] == 64
    dataset = CocoDetection(*synthetic_split_paths(tmp_path, "train"))
    image, target = dataset[0]
    assert image.shape == (3, 64, 64) and np.all(target["labels"].numpy() >= 1)
