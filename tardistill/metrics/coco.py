"""COCO box metrics through faster-coco-eval, with input checks that fail in one line."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Collection, Hashable
from numbers import Integral, Real
from pathlib import Path

import faster_coco_eval

from tardistill.errors import DataError

# The first 9 of COCOeval's 12 summary stats, in its order; the size-bucketed ARs are left out.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def _silent(*args, **kwargs) -> None:
    """Swallow faster-coco-eval's progress and summary messages."""


def _is_number(value) -> bool:
    # bool is an int subclass, but True as a score or coordinate is a bug upstream.
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _entry_problem(detection) -> str | None:
    """The first structural problem of one detection, or None when it is well formed."""
    if not isinstance(detection, dict):
        return f"expected an object, got {type(detection).__name__}"
    for key in _DETECTION_KEYS:
        if key not in detection:
            return f"missing {key!r}"
    bbox = detection["bbox"]
    bbox = bbox.tolist() if hasattr(bbox, "tolist") else bbox  # a numpy array or tensor is fine too
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        return f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"'bbox' has a negative width or height: {list(bbox)!r}"
    if not _is_number(detection["score"]):
        return f"'score' must be a finite number, got {detection['score']!r}"
    if not isinstance(detection["image_id"], Hashable) or not isinstance(detection["category_id"], Hashable):
        return "'image_id' and 'category_id' must be plain ids"
    return None


def validate_detections(
    detections,
    *,
    image_ids: Collection | None,
    category_ids: Collection | None,
    source: str,
) -> None:
    """Raise DataError naming `source` and the first bad detection; None skips an id check."""
    if not isinstance(detections, list):
        raise DataError(f"{source}: expected a list of detections, got {type(detections).__name__}")
    for index, detection in enumerate(detections):
        problem = _entry_problem(detection)
        if problem is None and image_ids is not None and detection["image_id"] not in image_ids:
            problem = f"image_id {detection['image_id']!r} is not in the ground truth"
        if problem is None and category_ids is not None and detection["category_id"] not in category_ids:
            problem = f"category_id {detection['category_id']!r} is not in the ground truth"
        if problem is not None:
            raise DataError(f"{source}: detection {index}: {problem}")


def load_detections(path: str | Path) -> list[dict]:
    """Read a COCO results JSON file: a list of {image_id, category_id, bbox, score}."""
    try:
        with open(path, encoding="utf-8") as file:
            detections = json.load(file)
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(detections, list):
        raise DataError(f"{path}: expected a JSON list of detections, got {type(detections).__name__}")
    validate_detections(detections, image_ids=None, category_ids=None, source=str(path))
    return detections


def _prepared_ground_truth(ground_truth: dict) -> dict:
    """A deep copy that faster-coco-eval may annotate freely (it writes 'ignore' into annotations)."""
    if not isinstance(ground_truth, dict):
        raise DataError(f"ground truth: expected a COCO dict, got {type(ground_truth).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(ground_truth.get(key), list):
            raise DataError(f"ground truth: missing the {key!r} list")
    prepared = copy.deepcopy(ground_truth)
    for annotation in prepared["annotations"]:
        # COCOeval buckets objects by 'area'; converted datasets often omit it, so use the box area.
        if "area" not in annotation and "bbox" in annotation:
            annotation["area"] = float(annotation["bbox"][2] * annotation["bbox"][3])
    return prepared


def _plain_id(value):
    """A numpy integer as a Python int; other ids unchanged, so they still match the GT's."""
    return int(value) if isinstance(value, Integral) else value


def _clean_detections(detections: list[dict]) -> list[dict]:
    """New plain-Python dicts: loadRes writes into its input, and numpy scalars upset the C++ side."""
    return [
        {
            "image_id": _plain_id(d["image_id"]),
            "category_id": _plain_id(d["category_id"]),
            "bbox": [float(v) for v in d["bbox"]],
            "score": float(d["score"]),
        }
        for d in detections
    ]


def coco_metrics(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """COCO bbox AP/AR of `detections` (a COCO results list) against a parsed COCO GT dict.

    Returns:
        {name: value} for COCO_METRIC_NAMES, each in [0, 1], or -1 where the ground truth has no
        objects of that kind (COCOeval's convention). No detections give 0 for every other metric.
    """
    prepared = _prepared_ground_truth(ground_truth)
    image_ids = {image["id"] for image in prepared["images"]}
    category_ids = {category["id"] for category in prepared["categories"]}
    validate_detections(detections, image_ids=image_ids, category_ids=category_ids, source="detections")

    coco_gt = faster_coco_eval.COCO(prepared, print_function=_silent)
    coco_dt = coco_gt.loadRes(_clean_detections(detections))
    evaluator = faster_coco_eval.COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}
