"""What each CLI subcommand does, as plain functions that take paths and return results."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tardistill.config import IMAGE_SIDE, Config, ModelConfig, Range, check_range, load_config, override_keys
from tardistill.errors import TardistillError

# Detection scores are probabilities; NaN would silently keep or drop every box.
SCORE_RANGE = Range(0, 1)


def make_dataset(name: str, out: Path, **options: Any) -> dict[str, Any]:
    """Write a generated dataset (`tardistill data synth | digits | shapes`)."""
    from tardistill.data.generated import generate_dataset

    return generate_dataset(name, out, **options)


def train(config_path: str, overrides: list[str], out: Path, *, resume: bool = False,
          overwrite: bool = False) -> dict[str, Any]:
    """`tardistill train`: train, keep the best checkpoint on val, report test metrics."""
    from tardistill.engine.runs import train as train_detector

    return train_detector(load_config(config_path, overrides), out, resume=resume, overwrite=overwrite)


def distill(config_path: str, overrides: list[str], out: Path, *, resume: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
    """`tardistill distill`: train a student with the teacher named by distill.teacher."""
    from tardistill.distill.runs import train_student

    return train_student(load_config(config_path, overrides), out, resume=resume, overwrite=overwrite)


def evaluate(config_path: str, overrides: list[str], checkpoint: Path | None, *, split: str,
             teacher: bool = False) -> dict[str, float]:
    """`tardistill eval`: a checkpoint, a torchvision weights file or the config's teacher, on the config's data.

    See engine/model_source.py for the sources and how a model on other classes is scored.
    """
    from tardistill.engine.evaluator import evaluate as evaluate_detector
    from tardistill.engine.model_source import load_model_on_data_classes
    from tardistill.engine.setup import dataset_for, select_device

    config = load_config(config_path, overrides)
    dataset = dataset_for(config.data, split, train=False)
    detector = load_model_on_data_classes(config, dataset.classes, checkpoint=checkpoint, teacher=teacher,
                                          model_keys=_model_overrides(config, overrides))
    device = select_device(config.train.device)
    return evaluate_detector(detector.to(device), dataset, batch_size=config.train.batch_size, device=device)


def _model_overrides(config: Config, overrides: list[str]) -> dict[str, Any]:
    """The model keys `--set` gives eval or predict: applied or refused (setup.inference_settings).

    The config file's model section is not among them: it is usually the training config of some
    model, and the checkpoint says which model this is.
    """
    return {key: getattr(config.model, key) for key in override_keys(overrides, "model")}


def evaluate_detections(gt: Path, detections: Path, *, metric: str | None, split: str) -> dict[str, float]:
    """`tardistill evaluate-detections`: score a results file against COCO JSON or a VOC root."""
    from tardistill.data.coco import CocoDetection
    from tardistill.data.voc import VOCDetection
    from tardistill.metrics import coco_metrics, load_detections, voc_metrics
    from tardistill.metrics.coco import validate_detections

    results = load_detections(detections)
    if gt.is_dir():
        if metric == "coco":
            raise TardistillError(f"{gt}: a VOC root is scored with --metric voc or voc07, not coco")
        dataset = VOCDetection(gt, split)
        names = {name: label for label, name in enumerate(dataset.classes, start=1)}
        validate_detections(results, image_ids=set(dataset.image_stems), category_ids=set(names),
                            source=str(detections))
        results = [{**r, "category_id": names[r["category_id"]]} for r in results]
        return voc_metrics(dataset.ground_truth(), results, classes=dataset.classes,
                           use_07_metric=metric == "voc07")
    if metric not in (None, "coco"):
        raise TardistillError(f"{gt}: VOC metrics need a VOC root directory, not a JSON file")
    # Read as training reads it: the same errors and warnings, the same boxes dropped.
    ground_truth = CocoDetection(None, gt, train=False).coco_gt
    validate_detections(results, image_ids={im["id"] for im in ground_truth["images"]},
                        category_ids={c["id"] for c in ground_truth["categories"]}, source=str(detections))
    return coco_metrics(ground_truth, results)


def predict(config_path: str, overrides: list[str], checkpoint: Path | None, images: Path, out: Path, *,
            score_threshold: float, teacher: bool = False) -> int:
    """`tardistill predict`: draw detections on every image of a folder; returns how many were written.

    Labels are the classes of the config's test split; without readable data, the model's own.
    """
    from tardistill.engine.model_source import load_model, on_data_classes
    from tardistill.engine.setup import dataset_for
    from tardistill.errors import DataError
    from tardistill.visualize import predict_folder

    check_range(score_threshold, SCORE_RANGE, "--score-threshold")
    config = load_config(config_path, overrides)
    try:
        data_classes = list(dataset_for(config.data, config.data.test_split, train=False).classes)
    except DataError as err:
        logging.getLogger(__name__).info("predict: labels are the model's own classes; the data's cannot be "
                                         "read (%s)", err)
        data_classes = None
    detector, classes, source = load_model(config, checkpoint=checkpoint, teacher=teacher,
                                           data_classes=data_classes,
                                           model_keys=_model_overrides(config, overrides))
    if data_classes:
        detector, classes = on_data_classes(detector, classes, data_classes, class_map=config.distill.class_map,
                                            source=source), data_classes
    return predict_folder(detector, classes, images, out, score_threshold=score_threshold)


def profile(sources: list[Path], overrides: list[str], *, repeats: int = 10) -> dict[str, dict[str, float]]:
    """`tardistill profile`: the cost of each checkpoint, or of a config's teacher and student, side by side.

    Each row: params_M, gflops, cpu_ms_batch1, cpu_ms_batch8 and peak_mib_batch1 (measured in a
    fresh process; see models/profile.py).
    """
    from tardistill.models.profile import peak_inference_mib, profile_detector

    rows = {}
    for name, detector, architecture, image_size in _profile_targets(sources, overrides):
        rows[name] = {**profile_detector(detector, image_size=image_size, repeats=repeats),
                      "peak_mib_batch1": peak_inference_mib(architecture, image_size=image_size)}
    return rows


def _profile_targets(sources: list[Path], overrides: list[str]):
    """Yield (row name, detector, picklable builder of its architecture, image size), one at a time.

    The memory is measured on the architecture with untrained weights, which take the same space;
    this spares the spawned process the checkpoint's loading, whose transient copies are not the
    model's cost. Latency is measured on the real weights: they decide how many boxes reach NMS.
    """
    from tardistill.config import config_from_dict
    from tardistill.engine.setup import load_detector

    for source in sources:
        if source.suffix in (".yaml", ".yml"):
            yield from _config_targets(source, overrides)
        else:
            detector, meta = load_detector(source)
            model = config_from_dict(meta["config"], source=str(source)).model
            yield (str(source), detector, *_architecture(model, len(meta["classes"])))


def _config_targets(path: Path, overrides: list[str]):
    """The config's teacher (if its method has one), then its student, as `tardistill distill` builds them."""
    from tardistill.distill.pair import build_pair
    from tardistill.distill.teacher import teacher_model_config
    from tardistill.engine.setup import dataset_for
    from tardistill.errors import DataError

    config = load_config(str(path), overrides)
    try:  # the student's own label set, which may differ from the teacher's (distill.class_map)
        classes = list(dataset_for(config.data, config.data.test_split, train=False).classes)
    except DataError:
        if config.distill.method == "none" or not config.distill.teacher:
            raise
        classes = None  # no data here: the teacher's classes; only the last layer's size differs
    pair = build_pair(config, classes)
    if pair.teacher is not None:
        model = teacher_model_config(config.distill, config.model)
        yield (f"teacher: {config.distill.teacher}", pair.teacher,
               *_architecture(model, len(pair.teacher_classes)))
    yield (f"student: {path}", pair.student, *_architecture(config.model, len(pair.student_classes)))


def _architecture(model: ModelConfig, num_classes: int) -> tuple[Any, int]:
    """(picklable builder of the model's detector with untrained weights, its image size)."""
    import dataclasses
    from functools import partial

    from tardistill.engine.setup import detector_from_config

    # Nothing is read from model.weights: untrained weights cost the same.
    model = dataclasses.replace(model, weights=None, backbone_weights=None)
    return partial(detector_from_config, model, num_classes), model.max_size


def format_profile(rows: dict[str, dict[str, float]]) -> str:
    """`profile`'s rows as a terminal table."""
    from tardistill.metrics import format_table

    body = [[name, f"{r['params_M']:.2f}", f"{r['gflops']:.2f}", f"{r['cpu_ms_batch1']:.1f}",
             f"{r['cpu_ms_batch8']:.1f}", f"{r['peak_mib_batch1']:.0f}"] for name, r in rows.items()]
    return format_table(["model", "params (M)", "GFLOPs (1 image)", "CPU ms (batch 1)", "CPU ms (batch 8)",
                         "peak MiB (batch 1)"], body)


def export(checkpoint: Path, out: Path, *, export_format: str, image_size: int | None,
           check_images: Path | None, max_check_images: int, score_threshold: float | None) -> dict[str, Any]:
    """`tardistill export`: write the detector alone as ONNX or TorchScript, then check it against PyTorch.

    Returns out, format, image_size and parity (see deploy/parity.py check_parity).
    """
    from tardistill.deploy import check_parity, export_detector, load_exported
    from tardistill.deploy.parity import parity_images
    from tardistill.engine.setup import load_detector

    if image_size is not None:
        check_range(image_size, Range(*IMAGE_SIDE), "--image-size")
    if score_threshold is not None:
        check_range(score_threshold, SCORE_RANGE, "--check-score-threshold")
    detector, meta = load_detector(checkpoint)
    model = meta["config"]["model"]
    size = image_size or model["max_size"]
    path = export_detector(detector, out, export_format=export_format, image_size=size, classes=meta["classes"])
    images = parity_images(check_images, image_size=size, limit=max_check_images)
    threshold = model["score_threshold"] if score_threshold is None else score_threshold
    parity = check_parity(detector, load_exported(path, export_format), images=images, score_threshold=threshold)
    return {"out": str(path), "format": export_format, "image_size": size,
            "check_images": str(check_images) if check_images else "random", "parity": parity}


def distill_cost(config_path: str, overrides: list[str], *, repeats: int) -> dict[str, Any]:
    """`tardistill bench distill-cost`: step-time ratio and peak memory of distillation."""
    from tardistill.bench.distill_cost import measure_peak_memory, measure_step_times

    config = load_config(config_path, overrides)
    return {"step_time": measure_step_times(config, repeats=repeats), "peak_memory": measure_peak_memory(config)}


def reproduce(preset: str, out: Path, *, seeds: int, jobs: int | None, only: list[str] | None,
              report_only: bool, docs: Path, seed_groups: list[str] | None = None) -> str:
    """`tardistill bench reproduce`: run what is missing, then write the report; returns a summary."""
    from tardistill.bench.plan import with_seeded_groups
    from tardistill.bench.presets import get_preset
    from tardistill.bench.report import write_report
    from tardistill.bench.reproduce import run_sweep

    chosen = with_seeded_groups(get_preset(preset), seed_groups)
    lines = []
    if not report_only:
        sweep = run_sweep(chosen, out, seeds=seeds, jobs=jobs, only=only)
        lines.append(f"runs: {len(sweep['done'])} finished now, {len(sweep['skipped'])} already done, "
                     f"{len(sweep['failed'])} failed {sorted(sweep['failed'])}")
    written = write_report(chosen, out, docs=docs, seeds=seeds, measure_performance=not only)
    lines.append("report: " + ", ".join(str(p) for p in written))
    return "\n".join(lines)


def demo(out: Path, *, fast: bool = False) -> dict[str, Any]:
    """`tardistill demo` / `make demo`."""
    from tardistill.demo import run_demo

    return run_demo(out, fast=fast)
