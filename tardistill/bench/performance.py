"""The performance section of the reproduction report, measured once per sweep and cached.

- distillation step time / (student step + teacher inference forward), in one process;
- peak memory of distillation against plain student training;
- COCO evaluation time of faster-coco-eval against pycocotools on the same detections;
- student against teacher: parameters, GFLOPs, CPU latency at batch 1 and batch 8.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from pathlib import Path
from typing import Any

from tardistill.config import Config

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def pycocotools_metrics(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """The reference implementation's first 9 summary stats (pycocotools is a dev dependency)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(COCO_STAT_NAMES, map(float, evaluator.stats[:9])))


def _best_of(fn, repeats: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def coco_eval_timing(checkpoint: Path, config: Config, *, repeats: int = 3) -> dict[str, Any]:
    """Seconds to score one detector's test-split detections with each COCO implementation."""
    from tardistill.engine.evaluator import detect_dataset
    from tardistill.engine.setup import dataset_for, load_detector
    from tardistill.metrics import coco_metrics

    detector, _ = load_detector(checkpoint)
    dataset = dataset_for(config.data, config.data.test_split, train=False)
    detections = detect_dataset(detector, dataset, batch_size=config.train.batch_size)
    ground_truth = dataset.coco_gt
    fast_s, fast = _best_of(lambda: coco_metrics(ground_truth, detections), repeats)
    result = {"images": len(dataset), "detections": len(detections), "faster_coco_eval_s": fast_s,
              "faster_coco_eval_AP": fast["AP"]}
    try:
        reference_s, reference = _best_of(lambda: pycocotools_metrics(ground_truth, detections), repeats)
    except ImportError:
        return {**result, "pycocotools": "not installed (pip install pycocotools)"}
    largest_difference = max(abs(fast[name] - reference[name]) for name in COCO_STAT_NAMES)
    return {**result, "pycocotools_s": reference_s, "pycocotools_AP": reference["AP"],
            "speedup": reference_s / fast_s, "max_stat_difference": largest_difference}


def measure_performance(teacher_checkpoint: Path, student_checkpoint: Path, distill_config: Config) -> dict:
    """Every number of the performance section (slow: minutes on a CPU)."""
    from tardistill.bench.distill_cost import measure_peak_memory, measure_step_times
    from tardistill.engine.setup import load_detector
    from tardistill.models.profile import profile_detector

    size = distill_config.model.max_size
    return {"step_time": measure_step_times(distill_config),
            "peak_memory": measure_peak_memory(distill_config),
            "coco_eval": coco_eval_timing(student_checkpoint, distill_config),
            "teacher": profile_detector(load_detector(teacher_checkpoint)[0], image_size=size),
            "student": profile_detector(load_detector(student_checkpoint)[0], image_size=size)}
