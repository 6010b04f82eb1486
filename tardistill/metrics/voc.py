"""Pascal VOC box AP in numpy: the VOC07 11-point metric and the VOC2010+ area metric.

Boxes are 0-based continuous pixel coordinates, like torchvision's targets, so IoU has no "+1"
in widths and heights (the MATLAB devkit's +1 belongs to its 1-based integer pixel boxes).
"""

from __future__ import annotations

import numpy as np

from tardistill.errors import DataError
from tardistill.metrics.coco import validate_detections

# k / 10 rounds like a recall of 3/10 does; np.arange(0, 1.1, 0.1) and np.linspace give
# 0.30000000000000004 (3 * 0.1), so a recall of exactly 0.3 would miss the t = 0.3 point.
_VOC07_RECALL_POINTS = np.arange(11) / 10.0


def voc_ap(recall, precision, *, use_07_metric: bool) -> float:
    """AP from a precision/recall curve ordered by descending score.

    Args:
        recall, precision: [D] arrays, one point per detection in rank order.
        use_07_metric: True for VOC07's 11-point mean of max precision at recall >= t, t in
            {0, 0.1, ..., 1}; False for the area under the monotone precision envelope.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        points = [precision[recall >= t].max(initial=0.0) for t in _VOC07_RECALL_POINTS]
        return float(np.mean(points))
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    # Envelope: the best precision reachable at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box [4] with boxes [N, 4] -> [N], in continuous coordinates."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _checked_ground_truth(ground_truth: dict, num_classes: int) -> dict:
    """Per image: float64 boxes [N, 4], int64 labels [N], bool difficult [N]; DataError if malformed."""
    if not isinstance(ground_truth, dict):
        raise DataError(f"ground truth: expected {{image: target}}, got {type(ground_truth).__name__}")
    checked = {}
    for key, target in ground_truth.items():
        try:
            boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
            difficult = np.asarray(target.get("difficult", np.zeros(len(labels))), dtype=bool).reshape(-1)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"ground truth: image {key!r}: bad target ({error})") from None
        if not len(boxes) == len(labels) == len(difficult):
            raise DataError(f"ground truth: image {key!r}: boxes, labels and difficult differ in length")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise DataError(f"ground truth: image {key!r}: labels must be in 1..{num_classes}")
        checked[key] = {"boxes": boxes, "labels": labels, "difficult": difficult}
    return checked


def _class_ground_truth(ground_truth: dict, label: int) -> tuple[dict, int]:
    """({image: (boxes [M, 4], difficult [M])} for one class, its count of non-difficult boxes)."""
    per_image, positives = {}, 0
    for key, target in ground_truth.items():
        keep = target["labels"] == label
        if keep.any():
            per_image[key] = (target["boxes"][keep], target["difficult"][keep])
            positives += int((~target["difficult"][keep]).sum())
    return per_image, positives


def _match(class_gt: dict, detections: list[dict], iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy VOC matching of detections [D] (sorted by descending score) -> (tp [D], fp [D]) flags.

    As in the VOC devkit, each detection takes the GT box it overlaps most, matched or not: a
    difficult one makes it neither TP nor FP, an already matched one makes it a duplicate (FP).
    """
    tp, fp = np.zeros(len(detections)), np.zeros(len(detections))
    taken = {key: np.zeros(len(boxes), dtype=bool) for key, (boxes, _) in class_gt.items()}
    for rank, detection in enumerate(detections):
        if detection["image_id"] not in class_gt:
            fp[rank] = 1.0
            continue
        boxes, difficult = class_gt[detection["image_id"]]
        overlaps = _iou_one_to_many(detection["xyxy"], boxes)
        best = int(overlaps.argmax())
        if overlaps[best] < iou_threshold:
            fp[rank] = 1.0
        elif difficult[best]:
            continue
        elif taken[detection["image_id"]][best]:
            fp[rank] = 1.0
        else:
            tp[rank], taken[detection["image_id"]][best] = 1.0, True
    return tp, fp


def _class_ap(
    class_gt: dict, positives: int, detections: list[dict], *, iou_threshold: float, use_07_metric: bool
) -> float:
    """AP of one class given its GT, its count of positives and its detections in any order."""
    # Stable sort: tied scores keep their input order, so results don't depend on the sort algorithm.
    order = np.argsort([-d["score"] for d in detections], kind="stable")
    tp, fp = _match(class_gt, [detections[i] for i in order], iou_threshold)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric=use_07_metric)


def _detections_by_class(detections: list[dict]) -> dict[int, list[dict]]:
    """Group detections by label, with the box converted from COCO [x, y, w, h] to xyxy."""
    grouped: dict[int, list[dict]] = {}
    for d in detections:
        x, y, w, h = (float(v) for v in d["bbox"])
        grouped.setdefault(int(d["category_id"]), []).append({
            "image_id": d["image_id"],
            "xyxy": np.array([x, y, x + w, y + h]),
            "score": float(d["score"]),
        })
    return grouped


def voc_metrics(
    ground_truth: dict,
    detections: list[dict],
    *,
    classes: list[str],
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict[str, float]:
    """VOC mAP and per-class AP.

    Args:
        ground_truth: image key -> {"boxes": [N, 4] xyxy, "labels": [N] in 1..K, "difficult": [N]}.
        detections: [{image_id (an image key), category_id (1..K), bbox [x, y, w, h], score}].
        classes: K class names; label i + 1 is classes[i].

    Returns:
        {"mAP": ..., "AP/<class>": ...}, values in [0, 1]. Classes without a non-difficult GT box
        have no AP (any detection of theirs is a false positive of nothing) and stay out of mAP.
    """
    truth = _checked_ground_truth(ground_truth, len(classes))
    labels = range(1, len(classes) + 1)
    validate_detections(detections, image_ids=truth, category_ids=labels, source="detections")
    grouped = _detections_by_class(detections)
    results = {}
    for label, name in zip(labels, classes):
        class_gt, positives = _class_ground_truth(truth, label)
        if positives:
            results[f"AP/{name}"] = _class_ap(
                class_gt, positives, grouped.get(label, []),
                iou_threshold=iou_threshold, use_07_metric=use_07_metric,
            )
    if not results:
        raise DataError("ground truth: no non-difficult object of any class, so mAP is undefined")
    return {"mAP": float(np.mean(list(results.values()))), **results}
