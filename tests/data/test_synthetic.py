"""The synthetic benchmark is deterministic, well-formed and readable as COCO."""

import json

import numpy as np
import pytest

from tardistill.data import SYNTH_CLASSES, CocoDetection, generate_synthetic, synthetic_split_paths

SMALL = {"num_train": 6, "num_val": 2, "num_test": 2, "image_size": 96, "workers": 1}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate_synthetic(root, seed=3, **SMALL)
    return root, summary


def _split_bytes(root, split):
    image_dir, annotation_file = synthetic_split_paths(root, split)
    images = {p.name: p.read_bytes() for p in sorted(image_dir.glob("*.png"))}
    return annotation_file.read_text(), images


def test_summary_and_layout(generated):
    root, summary = generated
    assert summary["classes"] == list(SYNTH_CLASSES) and len(SYNTH_CLASSES) >= 8
    assert {s: v["images"] for s, v in summary["splits"].items()} == {
        "train": 6, "val": 2, "test": 2}
    image_dir, annotation_file = synthetic_split_paths(root, "val")
    assert image_dir == root / "val" and annotation_file == root / "annotations" / "val.json"
    assert len(list(image_dir.glob("*.png"))) == 2


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    root, _ = generated
    generate_synthetic(tmp_path / "same", seed=3, **SMALL)
    generate_synthetic(tmp_path / "other", seed=4, **SMALL)
    for split in ("train", "test"):
        assert _split_bytes(root, split) == _split_bytes(tmp_path / "same", split)
        assert _split_bytes(root, split) != _split_bytes(tmp_path / "other", split)


def test_parallel_workers_write_identical_files(generated, tmp_path):
    root, _ = generated
    generate_synthetic(tmp_path / "parallel", seed=3, **{**SMALL, "workers": 2})
    assert _split_bytes(root, "train") == _split_bytes(tmp_path / "parallel", "train")


def test_annotations_well_formed(generated):
    root, _ = generated
    coco = json.loads(synthetic_split_paths(root, "train")[1].read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SYNTH_CLASSES) + 1))
    boxes = np.array([a["bbox"] for a in coco["annotations"]])
    assert len(boxes) >= 12  # 6 images x at least 2 objects
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 96 + 1e-6).all()
    assert (boxes[:, 1] + boxes[:, 3] <= 96 + 1e-6).all()
    sizes = boxes[:, 2:].max(axis=1)
    assert sizes.min() >= 6 and sizes.max() <= 48 + 1e-6
    assert sizes.max() / sizes.min() > 2.5  # small and large objects both present
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in coco["annotations"])


def test_loads_with_coco_reader(generated):
    root, _ = generated
    dataset = CocoDetection(*synthetic_split_paths(root, "train"))
    assert dataset.classes == list(SYNTH_CLASSES) and len(dataset) == 6
    image, target = dataset[0]
    assert image.shape == (3, 96, 96)
    assert target["labels"].min() >= 1 and target["labels"].max() <= len(SYNTH_CLASSES)
