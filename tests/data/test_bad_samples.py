"""data.on_bad_sample: 'error' stops at a bad record or image, 'skip' leaves it out and says why."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tardistill.config import load_config
from tardistill.data import CocoDetection, VOCDetection
from tardistill.data.bad_samples import SKIPPED_KEY, BadSamples, pop_skipped
from tardistill.engine.evaluator import predict
from tardistill.errors import ConfigError, DataError, SampleSkipped


def _coco_dir(tmp_path, annotations):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.full((10, 20, 3), 90, np.uint8)).save(tmp_path / name)
    coco = {"images": [{"id": i, "file_name": n, "width": 20, "height": 10}
                       for i, n in ((1, "a.png"), (2, "b.png"), (3, "c.png"))],
            "annotations": annotations, "categories": [{"id": 3, "name": "cat"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path, tmp_path / "ann.json"


def _ann(ann_id, image_id, bbox=(1, 1, 4, 4)):
    return {"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": list(bbox)}


def test_policy_must_be_known():
    with pytest.raises(ConfigError, match="on_bad_sample.*error, skip"):
        BadSamples("ignore")
    with pytest.raises(ConfigError, match="data.on_bad_sample: unknown policy 'ignore'"):
        load_config(None, ["data.on_bad_sample=ignore"])
    assert load_config(None, []).data.on_bad_sample == "error"


def test_error_policy_stops_at_a_bad_annotation(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(1, 1), _ann(2, 2, bbox=("x", 1, 2, 2))])
    with pytest.raises(DataError, match=r"ann\.json: annotations\[1\] \(id 2\)"):
        CocoDetection(image_dir, path)


def test_skip_leaves_out_the_image_of_a_bad_annotation(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(1, 1), _ann(2, 2, bbox=("x", 1, 2, 2)), _ann(3, 2),
                                           _ann(4, 3), _ann(5, 99)])
    dataset = CocoDetection(image_dir, path, on_bad_sample="skip")
    # Image 2 goes with its bad annotation 2; annotation 5 names no listed image.
    assert dataset.image_ids == [1, 3]
    assert [im["id"] for im in dataset.coco_gt["images"]] == [1, 3]
    assert [a["id"] for a in dataset.coco_gt["annotations"]] == [1, 4]
    reasons = dataset.bad_samples.reasons
    assert len(reasons) == 2 and "annotations[1] (id 2)" in reasons[0] and "unknown image_id 99" in reasons[1]
    assert all("ann.json" in reason for reason in reasons)


def test_skip_leaves_out_bad_image_records_and_missing_files(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(1, 1), _ann(2, 2)])
    coco = json.loads(path.read_text())
    coco["images"][0]["width"] = -20
    path.write_text(json.dumps(coco))
    (tmp_path / "c.png").unlink()
    dataset = CocoDetection(image_dir, path, on_bad_sample="skip")
    assert dataset.image_ids == [2]
    assert [a["id"] for a in dataset.coco_gt["annotations"]] == [2]  # annotation 1 left with image 1
    assert len(dataset.bad_samples.reasons) == 2  # images[0]'s size, c.png missing; not annotation 1
    assert "c.png: image file not found" in dataset.bad_samples.reasons[1]


def test_nothing_left_is_still_an_error(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(i, i, bbox=(0, 0, "w", 1)) for i in (1, 2, 3)])
    with pytest.raises(DataError, match=r"ann\.json: no usable images left \(3 bad samples skipped\)"):
        CocoDetection(image_dir, path, on_bad_sample="skip")


def test_training_replaces_an_unreadable_image_with_the_next(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(1, 1), _ann(2, 2), _ann(3, 3)])
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b\.png: cannot read image"):
        CocoDetection(image_dir, path)[1]
    dataset = CocoDetection(image_dir, path, on_bad_sample="skip", train=True)
    image, target = dataset[1]
    assert target["image_id"] == 3 and image.shape == (3, 10, 20)
    assert len(target[SKIPPED_KEY]) == 1 and "b.png: cannot read image" in target[SKIPPED_KEY][0]
    assert pop_skipped([target]) == list(dataset.bad_samples.reasons) and SKIPPED_KEY not in target
    dataset[1]  # met again next epoch: still one bad sample
    assert len(dataset.bad_samples.reasons) == 1


class NoDetections(torch.nn.Module):
    def forward(self, images):
        return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
                for _ in images]


def test_evaluation_leaves_an_unreadable_image_out_of_detections_and_ground_truth(tmp_path):
    image_dir, path = _coco_dir(tmp_path, [_ann(1, 1), _ann(2, 2), _ann(3, 3)])
    (tmp_path / "b.png").write_bytes(b"not a png")
    dataset = CocoDetection(image_dir, path, on_bad_sample="skip", train=False)
    with pytest.raises(SampleSkipped):
        dataset[1]

    assert [index for index, _ in predict(NoDetections(), dataset, batch_size=2)] == [0, 2]
    assert [im["id"] for im in dataset.coco_gt["images"]] == [1, 3]
    assert [a["image_id"] for a in dataset.coco_gt["annotations"]] == [1, 3]


def _voc(tmp_path, xmls):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    for stem, xml in xmls.items():
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / f"JPEGImages/{stem}.jpg")
        (tmp_path / f"Annotations/{stem}.xml").write_text(xml)
    (tmp_path / "ImageSets/Main/test.txt").write_text("\n".join(xmls) + "\n")
    return tmp_path


GOOD = ("<annotation><size><width>32</width><height>24</height></size><object><name>dog</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")


def test_voc_skip_leaves_out_bad_xml_missing_files_and_unreadable_images(tmp_path):
    root = _voc(tmp_path, {"a": GOOD, "b": GOOD.replace("dog", "dragon"), "c": GOOD, "d": GOOD, "e": "<x"})
    (root / "JPEGImages/c.jpg").unlink()
    (root / "JPEGImages/d.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"c\.jpg: file not found"):
        VOCDetection(root, "test")
    dataset = VOCDetection(root, "test", on_bad_sample="skip", train=False)
    assert dataset.image_stems == ["a", "d"]
    with pytest.raises(SampleSkipped, match=r"d\.jpg: cannot read image"):
        dataset[1]
    assert list(dataset.ground_truth()) == ["a"]
    reasons = " | ".join(dataset.bad_samples.reasons)
    assert len(dataset.bad_samples.reasons) == 4
    for named in ("c.jpg: file not found", "b.xml: object #0: class 'dragon'", "e.xml: malformed XML",
                  "d.jpg: cannot read image"):
        assert named in reasons
