"""Run a detector over a dataset and score it with the COCO or VOC metric the dataset calls for.

Under torchrun every rank detects on its own shard of the images, rank 0 gathers the detections and
scores them, and every rank returns rank 0's metrics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from tardistill.engine.distributed import gather_to_main, is_distributed, rank, run_on_main, world_size
from tardistill.errors import SampleSkipped
from tardistill.metrics import coco_metrics, voc_metrics


@torch.no_grad()
def predict(model: nn.Module, dataset, *, batch_size: int = 8, device: torch.device = torch.device("cpu"),
            indices: Sequence[int] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (dataset index, detections) with boxes in the original image's pixels (xyxy).

    Args:
        indices: the images to run on (default: all of them, in order).
    """
    indices = range(len(dataset)) if indices is None else indices
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(indices), batch_size):
            loaded = _loadable_images(dataset, indices[start:start + batch_size])
            if not loaded:
                continue
            batch_indices, images = zip(*loaded)
            for index, output in zip(batch_indices, model([image.to(device) for image in images])):
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


def predict_all_ranks(model: nn.Module, dataset, *, batch_size: int = 8,
                      device: torch.device = torch.device("cpu")):
    """`predict` over the whole dataset; under torchrun, shared out over the ranks.

    Rank r runs on images r, r + W, r + 2W, ... Inference runs no collective, so the shards need
    not be equal and none is padded with repeated images. Rank 0 gets every (index, detections)
    pair, once per image and in index order; the other ranks get None.
    """
    if not is_distributed():
        return predict(model, dataset, batch_size=batch_size, device=device)
    shard = range(rank(), len(dataset), world_size())
    shards = gather_to_main(list(predict(model, dataset, batch_size=batch_size, device=device, indices=shard)))
    return None if shards is None else merge_shards(dataset, shards)


def merge_shards(dataset, shards: list[list[tuple[int, dict]]]) -> list[tuple[int, dict]]:
    """The ranks' (index, detections) pairs as one list in index order, each image at most once.

    An image another rank skipped (data.on_bad_sample: skip) is dropped from rank 0's ground truth
    too, by reading it here once more, as that rank's dataset did.
    """
    by_index: dict[int, dict] = {}
    for shard in shards:
        for index, output in shard:
            by_index.setdefault(index, output)
    for index in sorted(set(range(len(dataset))) - set(by_index)):
        _loadable_images(dataset, [index])  # fails here too, and leaves rank 0's ground truth
    return sorted(by_index.items())


def detect_dataset(model: nn.Module, dataset, *, batch_size: int = 8,
                   device: torch.device = torch.device("cpu")) -> list[dict]:
    """Detections on a whole dataset, keyed as the dataset's own metric expects.

    Under torchrun: all of them on rank 0, none ([]) on the other ranks.
    """
    outputs = predict_all_ranks(model, dataset, batch_size=batch_size, device=device)
    if outputs is None:
        return []
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
    """Detect on every image of `dataset`, then score (under torchrun: on rank 0, for every rank)."""
    detections = detect_dataset(model, dataset, batch_size=batch_size, device=device)
    return run_on_main(score_detections, dataset, detections)
