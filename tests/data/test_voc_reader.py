"""VOC reader on a tiny VOCdevkit written in tmp_path."""

import numpy as np
import pytest
import torch
from PIL import Image

from tardistill.data import VOC_CLASSES, VOCDetection, read_voc_annotation
from tardistill.errors import DataError


def _object_xml(name, box, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            f"</bndbox></object>")


def _xml(objects, width=32, height=24):
    return (f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth>"
            f"</size>{''.join(objects)}</annotation>")


def _devkit(tmp_path, annotations, split="train"):
    """Write JPEGImages, Annotations and ImageSets/Main/<split>.txt; returns the root."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    for stem, xml in annotations.items():
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / f"JPEGImages/{stem}.jpg")
        (tmp_path / f"Annotations/{stem}.xml").write_text(xml)
    (tmp_path / f"ImageSets/Main/{split}.txt").write_text("\n".join(annotations) + "\n")
    return tmp_path


def test_voc_classes_standard():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[14] == "person"
    assert VOC_CLASSES[-1] == "tvmonitor"


def test_one_based_pixels_become_zero_based_edges(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml([_object_xml("dog", (1, 1, 10, 5)), _object_xml("cat", (3, 4, 32, 24))]))
    annotation = read_voc_annotation(path, VOC_CLASSES)
    np.testing.assert_array_equal(annotation["boxes"], [[0, 0, 10, 5], [2, 3, 32, 24]])
    assert annotation["boxes"].dtype == np.float32
    assert annotation["labels"].tolist() == [12, 8]  # dog, cat in 1..20
    assert annotation["labels"].dtype == np.int64
    assert annotation["difficult"].dtype == np.bool_
    assert (annotation["width"], annotation["height"]) == (32, 24)


def test_difficult_kept_in_ground_truth_but_not_in_training_targets(tmp_path):
    root = _devkit(tmp_path, {
        "000001": _xml([_object_xml("dog", (1, 1, 10, 10)),
                        _object_xml("cat", (5, 5, 20, 20), difficult=1)]),
        "000002": _xml([]),
    })
    dataset = VOCDetection(root, "train")
    assert dataset.image_stems == ["000001", "000002"]
    image, target = dataset[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32
    assert target["labels"].tolist() == [12]
    assert target["image_id"] == 0
    assert VOCDetection(root, "train", train=False)[0][1]["labels"].tolist() == [12, 8]
    truth = dataset.ground_truth()
    assert truth["000001"]["labels"].tolist() == [12, 8]
    assert truth["000001"]["difficult"].tolist() == [False, True]
    assert truth["000002"]["boxes"].shape == (0, 4)
    _, empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64


def test_custom_classes(tmp_path):
    root = _devkit(tmp_path, {"x": _xml([_object_xml("widget", (2, 2, 6, 6))])})
    dataset = VOCDetection(root, "train", classes=["gadget", "widget"])
    assert dataset.classes == ["gadget", "widget"]
    assert dataset[0][1]["labels"].tolist() == [2]


def test_malformed_xml_names_file(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<annotation><size>")
    with pytest.raises(DataError, match=r"bad\.xml: malformed XML"):
        read_voc_annotation(path, VOC_CLASSES)


def test_unknown_class_named(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml([_object_xml("unicorn", (1, 1, 5, 5))]))
    with pytest.raises(DataError, match=r"a\.xml: object #0: class 'unicorn' not in data\.classes"):
        read_voc_annotation(path, VOC_CLASSES)


def test_missing_split_file(tmp_path):
    root = _devkit(tmp_path, {"x": _xml([])})
    with pytest.raises(DataError, match=r"val\.txt: split file not found"):
        VOCDetection(root, "val")


def test_missing_image_and_xml_named(tmp_path):
    root = _devkit(tmp_path, {"x": _xml([]), "y": _xml([])})
    (root / "JPEGImages/y.jpg").unlink()
    with pytest.raises(DataError, match=r"y\.jpg: file not found"):
        VOCDetection(root, "train")
    (root / "Annotations/x.xml").unlink()
    with pytest.raises(DataError, match=r"x\.xml: file not found"):
        VOCDetection(root, "train")


def test_clip_and_drop_policy(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml([_object_xml("dog", (1, 1, 40, 10)), _object_xml("cat", (5, 5, 4, 9))]))
    with pytest.warns(UserWarning) as record:
        annotation = read_voc_annotation(path, VOC_CLASSES)
    messages = " ".join(str(w.message) for w in record)
    assert "object #0" in messages and "clipped" in messages
    assert "object #1" in messages and "dropped" in messages
    np.testing.assert_array_equal(annotation["boxes"], [[0, 0, 32, 10]])


def test_size_that_disagrees_with_the_image_names_the_xml_and_the_image(tmp_path):
    # found by the fuzz test: the message named only the image, not the XML file to fix
    root = _devkit(tmp_path, {"a": _xml([_object_xml("dog", (1, 1, 10, 5))], width=24, height=24)})
    with pytest.raises(DataError, match=r"Annotations/a\.xml: <size> says 24x24 but the image .*a\.jpg is 32x24"):
        VOCDetection(root, "train")[0]
