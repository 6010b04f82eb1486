"""CocoDetection on tiny hand-made COCO files."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tardistill.data import CocoDetection
from tardistill.errors import DataError


def _write_png(path, width=20, height=10):
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def _coco(images, annotations, categories=None):
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 12, "name": "zebra"},
                                {"id": 7, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _image(image_id, name, width=20, height=10):
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def _ann(ann_id, image_id, category_id, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            **extra}


def _make(tmp_path, coco, *, files=("a.png", "b.png")):
    for name in files:
        _write_png(tmp_path / name)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return tmp_path, path


def _build(tmp_path, coco, **kwargs):
    image_dir, path = _make(tmp_path, coco)
    return CocoDetection(image_dir, path, **kwargs)


def test_labels_are_contiguous_in_sorted_category_order(tmp_path):
    coco = _coco([_image(5, "a.png")],
                 [_ann(1, 5, 12, [0, 0, 4, 4]), _ann(2, 5, 3, [1, 1, 2, 2]),
                  _ann(3, 5, 7, [2, 2, 3, 3])])
    dataset = _build(tmp_path, coco)
    assert dataset.category_ids == [3, 7, 12]
    assert dataset.classes == ["cat", "dog", "zebra"]
    image, target = dataset[0]
    assert target["labels"].tolist() == [3, 1, 2]
    assert target["image_id"] == 5
    assert dataset.image_ids == [5]
    assert dataset.coco_gt == coco


def test_item_format_and_xywh_to_xyxy(tmp_path):
    dataset = _build(tmp_path, _coco([_image(1, "a.png")], [_ann(1, 1, 3, [2, 3, 4, 5])]))
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 10, 20)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[2, 3, 6, 8]]


def test_image_without_annotations_gives_empty_target(tmp_path):
    dataset = _build(tmp_path, _coco([_image(1, "a.png"), _image(2, "b.png")],
                                     [_ann(1, 1, 3, [0, 0, 4, 4])]))
    _, target = dataset[1]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


@pytest.mark.parametrize("train", [True, False])
def test_crowd_boxes_left_out_of_targets(tmp_path, train):
    coco = _coco([_image(1, "a.png")], [_ann(1, 1, 3, [0, 0, 4, 4]),
                                        _ann(2, 1, 7, [5, 5, 4, 4], iscrowd=1)])
    _, target = _build(tmp_path, coco, train=train)[0]
    assert target["labels"].tolist() == [1]


def test_missing_image_named_at_construction(tmp_path):
    coco = _coco([_image(1, "a.png"), _image(2, "gone.png"), _image(3, "gone2.png")], [])
    image_dir, path = _make(tmp_path, coco, files=("a.png",))
    with pytest.raises(DataError, match=r"gone\.png.*2 of 3"):
        CocoDetection(image_dir, path)


def test_corrupt_image_named_when_loaded(tmp_path):
    image_dir, path = _make(tmp_path, _coco([_image(1, "a.png")], []), files=())
    (tmp_path / "a.png").write_bytes(b"not a png at all")
    dataset = CocoDetection(image_dir, path)
    with pytest.raises(DataError, match=r"a\.png: cannot read image"):
        dataset[0]


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON at line 2"):
        CocoDetection(tmp_path, path)


def test_missing_required_key(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="missing required key.*annotations"):
        CocoDetection(tmp_path, path)


def test_unknown_category_is_an_error(tmp_path):
    coco = _coco([_image(1, "a.png")], [_ann(9, 1, 99, [0, 0, 4, 4])])
    with pytest.raises(DataError, match=r"ann\.json: annotations\[0\] \(id 9\) has unknown category_id 99"):
        _build(tmp_path, coco)


def test_degenerate_box_dropped_with_warning(tmp_path):
    coco = _coco([_image(1, "a.png")], [_ann(1, 1, 3, [0, 0, 4, 4]),
                                        _ann(42, 1, 3, [5, 5, 0, 3])])
    with pytest.warns(UserWarning, match=r"ann\.json.*a\.png.*annotation id 42.*dropped"):
        dataset = _build(tmp_path, coco)
    assert dataset[0][1]["boxes"].tolist() == [[0, 0, 4, 4]]


def test_box_fully_outside_dropped(tmp_path):
    coco = _coco([_image(1, "a.png")], [_ann(8, 1, 3, [25, 2, 4, 4])])
    with pytest.warns(UserWarning, match="annotation id 8.*dropped"):
        dataset = _build(tmp_path, coco)
    assert dataset[0][1]["boxes"].shape == (0, 4)


def test_box_outside_image_clipped_with_warning(tmp_path):
    coco = _coco([_image(1, "a.png")], [_ann(7, 1, 3, [-3, 2, 10, 20])])
    with pytest.warns(UserWarning, match="annotation id 7.*clipped"):
        dataset = _build(tmp_path, coco)
    assert dataset[0][1]["boxes"].tolist() == [[0, 2, 7, 10]]


def test_subpixel_overshoot_clipped_silently(tmp_path):
    coco = _coco([_image(1, "a.png")], [_ann(1, 1, 3, [10, 0, 10.4, 10])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = _build(tmp_path, coco)
    assert dataset[0][1]["boxes"].tolist() == [[10, 0, 20, 10]]


def test_image_size_mismatch_named(tmp_path):
    dataset = _build(tmp_path, _coco([_image(1, "a.png", width=30)], []))
    with pytest.raises(DataError, match=r"a\.png: image is 20x10 but .* says 30x10"):
        dataset[0]


def test_transforms_applied(tmp_path):
    def halve(image, target):
        return image[:, ::2, ::2], {**target, "boxes": target["boxes"] / 2}

    dataset = _build(tmp_path, _coco([_image(1, "a.png")], [_ann(1, 1, 3, [2, 2, 4, 4])]),
                     transforms=halve)
    image, target = dataset[0]
    assert image.shape == (3, 5, 10)
    assert target["boxes"].tolist() == [[1, 1, 3, 3]]
