"""The two generated sets beside the benchmark: digits (the second benchmark) and shapes (pretraining)."""

import json

import numpy as np
import pytest

from tardistill.data import SYNTH_CLASSES, CocoDetection, synthetic_split_paths
from tardistill.data.digits import DIGIT_CLASSES, render_digits_image, scan_indices
from tardistill.data.generated import GENERATED_DATASETS, generate_dataset
from tardistill.data.pretrain_shapes import PRETRAIN_CLASSES, render_pretrain_image

SMALL = {"num_train": 4, "num_val": 2, "num_test": 2, "image_size": 96, "workers": 1}


@pytest.mark.parametrize("name, classes", [("digits", DIGIT_CLASSES), ("shapes", PRETRAIN_CLASSES)])
def test_generated_set_is_coco_readable_with_boxes_inside_the_image(tmp_path, name, classes):
    summary = generate_dataset(name, tmp_path, seed=1, **SMALL)
    assert summary["classes"] == list(classes)
    assert {split: v["images"] for split, v in summary["splits"].items()} == {"train": 4, "val": 2, "test": 2}
    coco = json.loads(synthetic_split_paths(tmp_path, "train")[1].read_text())
    boxes = np.array([a["bbox"] for a in coco["annotations"]])
    assert len(boxes) >= 4 and (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 96 + 1e-6).all() and (boxes[:, 1] + boxes[:, 3] <= 96 + 1e-6).all()
    dataset = CocoDetection(*synthetic_split_paths(tmp_path, "val"))
    assert dataset.classes == list(classes)
    image, target = dataset[0]
    assert image.shape == (3, 96, 96) and target["labels"].min() >= 1


@pytest.mark.parametrize("render", [render_digits_image, render_pretrain_image])
def test_rendering_is_deterministic(render):
    first, again, other = render(0, "train", 3), render(0, "train", 3), render(1, "train", 3)
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], other[0])


def test_pretraining_classes_are_disjoint_from_every_benchmark():
    assert not set(PRETRAIN_CLASSES) & (set(SYNTH_CLASSES) | set(DIGIT_CLASSES))
    # and its images are not the benchmark's: another random stream
    from tardistill.data.synthetic import render_image

    assert not np.array_equal(render_pretrain_image(0, "train", 0)[0], render_image(0, "train", 0)[0])


def test_digit_splits_draw_on_disjoint_scans():
    splits = {split: set(scan_indices(split).tolist()) for split in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    assert sum(map(len, splits.values())) == 1797  # every scikit-learn scan is used once
    assert GENERATED_DATASETS == ("synth", "digits", "shapes")
