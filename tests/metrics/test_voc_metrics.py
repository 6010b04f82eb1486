"""VOC AP on hand-computed cases: ranks of TPs and FPs, difficult objects, duplicates, IoU edges."""

import numpy as np
import pytest

from tardistill.errors import DataError
from tardistill.metrics import voc_ap, voc_metrics

CLASSES = ["cat", "dog", "bird"]
# Three disjoint 10x10 boxes in a row, and one far from all of them.
ROW = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
NOWHERE = [100, 100, 110, 110]


def _target(boxes, labels, difficult=None) -> dict:
    difficult = [False] * len(labels) if difficult is None else difficult
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64), "difficult": np.array(difficult, dtype=bool)}


def _detection(image_id, label, xyxy, score) -> dict:
    """A detection in the COCO results convention: bbox is [x, y, w, h]."""
    x1, y1, x2, y2 = xyxy
    return {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def _both(ground_truth, detections, **kwargs) -> tuple[dict, dict]:
    """(area metric, VOC07 11-point metric)."""
    area = voc_metrics(ground_truth, detections, classes=CLASSES, **kwargs)
    eleven = voc_metrics(ground_truth, detections, classes=CLASSES, use_07_metric=True, **kwargs)
    return area, eleven


def test_perfect_detections_give_one():
    ground_truth = {"a": _target(ROW[:2], [1, 2]), "b": _target(ROW[1:4], [3, 1, 1])}
    detections = [_detection(key, int(label), box, 0.9 - 0.1 * i)
                  for key, target in ground_truth.items()
                  for i, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"]))]
    for metrics in _both(ground_truth, detections):
        assert metrics == {"mAP": 1.0, "AP/cat": 1.0, "AP/dog": 1.0, "AP/bird": 1.0}


def test_false_positive_at_rank_two():
    # 3 GT; ranked TP, FP, TP, TP -> recall 1/3, 1/3, 2/3, 1 and precision 1, 1/2, 2/3, 3/4.
    # Area: the envelope lifts the 2/3 at recall 2/3 to the 3/4 found later, so
    #   AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 (not the raw 1/3 * (1 + 2/3 + 3/4) = 29/36).
    # 11-point: t = 0, .1, .2, .3 -> 1; t = .4 ... 1.0 (7 points) -> 3/4; AP = (4 + 7 * 3/4) / 11 = 37/44.
    ground_truth = {"a": _target(ROW[:3], [1, 1, 1])}
    detections = [_detection("a", 1, ROW[0], 0.9), _detection("a", 1, NOWHERE, 0.8),
                  _detection("a", 1, ROW[1], 0.7), _detection("a", 1, ROW[2], 0.6)]
    area, eleven = _both(ground_truth, detections)
    assert area == {"mAP": pytest.approx(5 / 6), "AP/cat": pytest.approx(5 / 6)}
    assert eleven["AP/cat"] == pytest.approx(37 / 44)


def test_two_false_positives_and_a_miss():
    # 4 GT; ranked TP, FP, TP, FP, TP, one GT never found.
    # recall 1/4, 1/4, 2/4, 2/4, 3/4; precision 1, 1/2, 2/3, 1/2, 3/5.
    # Area: 1/4 * (1 + 2/3 + 3/5) + 1/4 * 0 = 17/30.
    # 11-point: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 3/5; t = .8, .9, 1 -> 0;
    #   AP = (3 + 2 + 6/5) / 11 = 31/55.
    ground_truth = {"a": _target(ROW[:2], [2, 2]), "b": _target(ROW[2:], [2, 2])}
    detections = [_detection("a", 2, ROW[0], 0.9), _detection("b", 2, NOWHERE, 0.8),
                  _detection("a", 2, ROW[1], 0.7), _detection("a", 2, ROW[2], 0.6),
                  _detection("b", 2, ROW[2], 0.5)]
    area, eleven = _both(ground_truth, detections)
    assert area["AP/dog"] == pytest.approx(17 / 30)
    assert eleven["AP/dog"] == pytest.approx(31 / 55)


def test_difficult_objects_are_ignored():
    # GT: one normal cat and one difficult cat. A top-ranked hit on the difficult one is neither
    # TP nor FP (counted as FP it would halve the precision: AP 1/2); missing it costs no recall
    # (counted as a positive, recall would stop at 1/2: AP 1/2).
    ground_truth = {"a": _target(ROW[:2], [1, 1], difficult=[False, True])}
    on_difficult = [_detection("a", 1, ROW[1], 0.95), _detection("a", 1, ROW[0], 0.9)]
    difficult_missed = [_detection("a", 1, ROW[0], 0.9)]
    for detections in (on_difficult, difficult_missed):
        for metrics in _both(ground_truth, detections):
            assert metrics == {"mAP": 1.0, "AP/cat": 1.0}


def test_duplicate_detection_is_false_positive():
    # 2 GT; ranked TP (A), duplicate of A, TP (B) -> recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # Area: 1/2 * 1 + 1/2 * 2/3 = 5/6.  11-point: t = 0 ... .5 -> 1; t = .6 ... 1 -> 2/3;
    #   AP = (6 + 5 * 2/3) / 11 = 28/33.  Were the duplicate ignored, both would be 1.
    ground_truth = {"a": _target(ROW[:2], [3, 3])}
    detections = [_detection("a", 3, ROW[0], 0.9), _detection("a", 3, [0.5, 0, 10.5, 10], 0.8),
                  _detection("a", 3, ROW[1], 0.7)]
    area, eleven = _both(ground_truth, detections)
    assert area["AP/bird"] == pytest.approx(5 / 6)
    assert eleven["AP/bird"] == pytest.approx(28 / 33)


def test_best_overlap_already_taken_is_false_positive():
    # VOC devkit rule: a detection takes the GT it overlaps most, even if that one is matched.
    # GT A = [0, 0, 10, 10], B = [4, 0, 14, 10]. The second detection [1, 0, 11, 10] has IoU 90/110
    # with A (taken) and 70/130 >= 0.5 with B; it is FP, not a match to B: AP = 1/2 * 1 = 1/2.
    ground_truth = {"a": _target([[0, 0, 10, 10], [4, 0, 14, 10]], [1, 1])}
    detections = [_detection("a", 1, [0, 0, 10, 10], 0.9), _detection("a", 1, [1, 0, 11, 10], 0.8)]
    assert voc_metrics(ground_truth, detections, classes=CLASSES)["AP/cat"] == pytest.approx(0.5)


def test_class_without_ground_truth_is_left_out():
    # cat found (AP 1), dog missed (AP 0), bird has no GT: its false positive changes nothing.
    ground_truth = {"a": _target(ROW[:2], [1, 2])}
    detections = [_detection("a", 1, ROW[0], 0.9), _detection("a", 3, ROW[1], 0.8)]
    metrics = voc_metrics(ground_truth, detections, classes=CLASSES)
    assert metrics == {"mAP": 0.5, "AP/cat": 1.0, "AP/dog": 0.0}


@pytest.mark.parametrize(("height", "iou_threshold", "expected"), [
    (5.0, 0.5, 1.0),  # IoU 50/100 = 0.5 exactly: a match (>=)
    (4.9, 0.5, 0.0),  # IoU 0.49; with the devkit's +1 pixels it would be 11*5.9/121 = 0.536
    (5.0, 0.7, 0.0),
])
def test_iou_is_continuous_and_threshold_inclusive(height, iou_threshold, expected):
    ground_truth = {"a": _target([ROW[0]], [1])}
    detections = [_detection("a", 1, [0, 0, 10, height], 0.9)]
    metrics = voc_metrics(ground_truth, detections, classes=CLASSES, iou_threshold=iou_threshold)
    assert metrics["AP/cat"] == pytest.approx(expected)


def test_voc_ap_on_raw_curves():
    # The curve of test_false_positive_at_rank_two; no detections at all give 0.
    recall, precision = [1 / 3, 1 / 3, 2 / 3, 1.0], [1.0, 0.5, 2 / 3, 0.75]
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 6)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(37 / 44)
    # Recall exactly 3/10 still counts at t = 0.3: (4 points of 1) / 11.
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
    for use_07_metric in (False, True):
        assert voc_ap([], [], use_07_metric=use_07_metric) == 0.0


@pytest.mark.parametrize(("ground_truth", "detections", "message"), [
    ({"a": _target([ROW[0]], [1])}, [_detection("z", 1, ROW[0], 0.9)], "image_id 'z' is not in"),
    ({"a": _target([ROW[0]], [1])}, [_detection("a", 4, ROW[0], 0.9)], "category_id 4 is not in"),
    ({"a": _target([ROW[0]], [1])}, [{"image_id": "a", "category_id": 1, "score": 0.9}], "missing 'bbox'"),
    ({"a": _target([ROW[0]], [0])}, [], "labels must be in 1..3"),
    ({"a": _target([ROW[0]], [1], difficult=[True])}, [], "no non-difficult object"),
])
def test_bad_input_is_data_error(ground_truth, detections, message):
    with pytest.raises(DataError, match=message):
        voc_metrics(ground_truth, detections, classes=CLASSES)
