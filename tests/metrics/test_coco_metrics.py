"""coco_metrics against pycocotools on a seeded fixture, plus input checks and edge cases."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from tardistill.errors import DataError
from tardistill.metrics import COCO_METRIC_NAMES, coco_metrics, load_detections
from tardistill.metrics.coco import validate_detections

CATEGORY_IDS = (2, 5, 9, 17)  # non-contiguous on purpose, like COCO's own ids
IMAGE_SIZE = 640.0


def _random_box(rng: np.random.RandomState) -> list[float]:
    """[x, y, w, h] with a log-uniform side from 6 to 300 px, so small, medium and large all occur."""
    side = np.exp(rng.uniform(np.log(6.0), np.log(300.0)))
    aspect = np.exp(rng.uniform(-0.5, 0.5))
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    x, y = rng.uniform(0.0, IMAGE_SIZE - w), rng.uniform(0.0, IMAGE_SIZE - h)
    return [float(x), float(y), float(w), float(h)]


def _jittered(rng: np.random.RandomState, box: list[float]) -> list[float]:
    """A detection near `box`: IoUs spread over 0.5..0.95 and below, so every AP threshold matters."""
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0.0, 0.08, size=4) * [w, h, w, h]
    return [float(x + dx), float(y + dy), float(max(w + dw, 1.0)), float(max(h + dh, 1.0))]


def make_fixture(num_images: int = 30, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO GT dict and a results list: jittered GT boxes, wrong labels and random false positives."""
    rng = np.random.RandomState(seed)
    images, annotations, detections = [], [], []
    for index in range(num_images):
        image_id = 100 + 7 * index
        images.append({"id": image_id, "width": int(IMAGE_SIZE), "height": int(IMAGE_SIZE)})
        for _ in range(rng.randint(5, 16)):
            box, category_id = _random_box(rng), int(rng.choice(CATEGORY_IDS))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id, "bbox": box,
                # A mask area below the box area, as real COCO has; COCOeval buckets sizes by it.
                "area": box[2] * box[3] * float(rng.uniform(0.6, 1.0)),
                "iscrowd": int(rng.rand() < 0.06),
            })
            if rng.rand() < 0.85:
                label = category_id if rng.rand() < 0.9 else int(rng.choice(CATEGORY_IDS))
                detections.append({"image_id": image_id, "category_id": label,
                                   "bbox": _jittered(rng, box), "score": float(rng.rand())})
        for _ in range(rng.poisson(4)):
            detections.append({"image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)),
                               "bbox": _random_box(rng), "score": float(rng.rand())})
    # One crowded image, past COCO's 100 detections per image, so the truncation is compared too.
    for _ in range(120):
        detections.append({"image_id": images[0]["id"], "category_id": CATEGORY_IDS[0],
                           "bbox": _random_box(rng), "score": float(rng.rand())})
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def pycocotools_stats(ground_truth: dict, detections: list[dict]) -> np.ndarray:
    """The reference: pycocotools' first 9 summary stats, its printing swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:9]


@pytest.fixture(scope="module")
def fixture() -> tuple[dict, list[dict]]:
    return make_fixture()


def test_matches_pycocotools(fixture):
    ground_truth, detections = fixture
    assert sum(a["iscrowd"] for a in ground_truth["annotations"]) > 0
    metrics = coco_metrics(ground_truth, detections)
    assert tuple(metrics) == COCO_METRIC_NAMES
    assert all(type(value) is float for value in metrics.values())
    # Every size bucket is populated and the score is neither trivial nor perfect.
    assert all(0.05 < metrics[name] < 0.95 for name in COCO_METRIC_NAMES)
    reference = pycocotools_stats(ground_truth, detections)
    for name, expected in zip(COCO_METRIC_NAMES, reference):
        assert metrics[name] == pytest.approx(expected, abs=1e-6), name


def test_inputs_not_mutated_and_nothing_printed(fixture, capsys):
    ground_truth, detections = fixture
    ground_truth_before, detections_before = copy.deepcopy(ground_truth), copy.deepcopy(detections)
    coco_metrics(ground_truth, detections)
    assert ground_truth == ground_truth_before
    assert detections == detections_before
    assert capsys.readouterr() == ("", "")


def test_empty_detections_give_zeros(fixture):
    ground_truth, _ = fixture
    assert coco_metrics(ground_truth, []) == {name: 0.0 for name in COCO_METRIC_NAMES}


def test_absent_size_stays_minus_one_and_missing_area_is_filled():
    # One 200x100 box and no "area" key: the box area (20000 > 96**2) makes it large.
    ground_truth = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 200, 100], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "box"}],
    }
    detections = [{"image_id": 1, "category_id": 3, "bbox": [10, 20, 200, 100], "score": 0.9}]
    metrics = coco_metrics(ground_truth, detections)
    assert metrics == {**{name: 1.0 for name in COCO_METRIC_NAMES}, "APs": -1.0, "APm": -1.0}


@pytest.mark.parametrize(("change", "message"), [
    ({"bbox": None}, "detection 0: 'bbox' must be 4 finite numbers"),
    ({"bbox": [1, 2, 3]}, "detection 0: 'bbox' must be 4 finite numbers"),
    ({"category_id": 4}, "detection 0: category_id 4 is not in the ground truth"),
    ({"image_id": 999}, "detection 0: image_id 999 is not in the ground truth"),
    ({"score": float("nan")}, "detection 0: 'score' must be a finite number"),
])
def test_bad_detection_is_one_line_data_error(fixture, change, message):
    ground_truth, _ = fixture
    detection = {"image_id": 100, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5, **change}
    with pytest.raises(DataError, match=f"^detections: {message}"):
        coco_metrics(ground_truth, [detection])


def test_validate_names_source_and_missing_key():
    detections = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}, {"image_id": 1}]
    with pytest.raises(DataError, match=r"^val\.json: detection 1: missing 'category_id'$"):
        validate_detections(detections, image_ids={1}, category_ids={1}, source="val.json")


def test_load_detections(tmp_path):
    detections = [{"image_id": 1, "category_id": 1, "bbox": [0.5, 1, 2, 3], "score": 0.25}]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(detections))
    assert load_detections(good) == detections

    cases = {"broken.json": ("[{", "not valid JSON"), "dict.json": ("{}", "expected a JSON list"),
             "nobox.json": ('[{"image_id": 1, "category_id": 1, "score": 1}]', "detection 0: missing 'bbox'")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=f"{name}: {message}"):
            load_detections(tmp_path / name)
    with pytest.raises(DataError, match="missing.json: cannot read"):
        load_detections(tmp_path / "missing.json")
