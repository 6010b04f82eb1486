"""Run a detector over a dataset and score it with the COCO or VOC metric the dataset calls for."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tardistill.errors import SampleSkipped
from tardistill.metrics import coco_metrics, voc_metrics


@torch.no_grad()
def predict(model: nn.Module, dataset, *, batch_size: int = 8,
            device: torch.device = torch.device("cpu")) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (dataset index, detections) with boxes in the original image's pixels (xyxy)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(dataset), batch_size):
            loaded = _loadable_images(dataset, range(start, min(start + batch_size, len(dataset))))
            if not loaded:
                continue
            indices, images = zip(*loaded)
            for index, output in zip(indices, model([image.to(device) for image in images])):
                yield index, {k: v.cpu() for k, v in output.items()}
    finally:
        model.train(was_training)


def _loadable_images(dataset, indices) -> list[tuple[int, torch.Tensor]]:
    """(index, image) pairs; an image left out under data.on_bad_sample: skip is not scored."""
    loaded = []
    for index in indices:
        try:
            loaded.append((index, dataset[index][0]))
        except SampleSkipped:  # the dataset has dropped it from its ground truth too
            continue
    return loaded


def to_coco_results(outputs, *, image_key, category_of) -> list[dict]:
    """Detections as a COCO results list: {image_id, category_id, bbox [x, y, w, h], score}."""
    results = []
    for index, output in outputs:
        boxes = output["boxes"].tolist()
        for (x1, y1, x2, y2), label, score in zip(boxes, output["labels"].tolist(), output["scores"].tolist()):
            results.append({"image_id": image_key(index), "category_id": category_of(label),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results


def detect_dataset(model: nn.Module, dataset, *, batch_size: int = 8,
                   device: torch.device = torch.device("cpu")) -> list[dict]:
    """Detections on a whole dataset, keyed as the dataset's own metric expects."""
    outputs = predict(model, dataset, batch_size=batch_size, device=device)
    if hasattr(dataset, "coco_gt"):
        return to_coco_results(outputs, image_key=lambda i: dataset.image_ids[i],
                               category_of=lambda label: dataset.category_ids[label - 1])
    return to_coco_results(outputs, image_key=lambda i: dataset.image_stems[i], category_of=int)


def score_detections(dataset, detections: list[dict], *, voc_metric: str = "voc") -> dict[str, float]:
    """COCO metrics for COCO-format datasets; VOC mAP (area or 11-point) for VOC ones."""
    if hasattr(dataset, "coco_gt"):
        return coco_metrics(dataset.coco_gt, detections)
    return voc_metrics(dataset.ground_truth(), detections, classes=dataset.classes,
                       use_07_metric=voc_metric == "voc07")


def evaluate(model: nn.Module, dataset, *, batch_size: int = 8,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Detect on every image of `dataset`, then score."""
    return score_detections(dataset, detect_dataset(model, dataset, batch_size=batch_size, device=device))
