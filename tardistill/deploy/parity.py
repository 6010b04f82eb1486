"""Parity of an exported detector with eager PyTorch: the same detections, within stated tolerances.

Tolerances, set from observation (docs/EXPORT.md has the numbers): ONNX Runtime's float32 kernels
round differently from PyTorch's. On the synthetic benchmark's trained Faster R-CNNs and RetinaNet
(128 px, 50 test images, every detection above 0.05) box corners moved by at most 3.1e-5 px and
scores by at most 3.8e-6; TorchScript matched eager exactly. The limits leave a margin of about
400x on boxes and 25x on scores, and are still far below anything visible.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from tardistill.deploy.export import EXPORT_FORMATS, SingleImageDetector
from tardistill.deploy.same_detections import SCORE_TOLERANCE, Detections, compare_detections, nms_disabled
from tardistill.errors import DataError, TardistillError

BOX_TOLERANCE_RELATIVE = 1e-4  # times the image side, in pixels: 0.0128 px at 128 px


def load_exported(path: str | Path, export_format: str) -> Callable[[Tensor], Detections]:
    """A function image [3, H, W] -> (boxes, scores, labels) that runs an exported file."""
    if export_format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; see export.py
            module = torch.jit.load(str(path)).eval()

        @torch.no_grad()
        def run_script(image: Tensor) -> Detections:
            with warnings.catch_warnings():  # "RCNN always returns a (Losses, Detections) tuple in scripting"
                warnings.simplefilter("ignore", UserWarning)
                return module(image)
        return run_script
    if export_format != "onnx":
        raise TardistillError(f"unknown export format '{export_format}' (valid: {', '.join(EXPORT_FORMATS)})")
    try:
        import onnxruntime
    except ImportError:
        raise TardistillError("the ONNX parity check needs onnxruntime: pip install 'tardistill[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(image: Tensor) -> Detections:
        boxes, scores, labels = session.run(None, {"image": image.numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)
    return run


def letterbox(image: Tensor, size: int) -> Tensor:
    """Scale an image [3, H, W] so its long side is `size`, then pad it with black to size x size."""
    scale = size / max(image.shape[-2:])
    height, width = (round(side * scale) for side in image.shape[-2:])
    resized = torch.nn.functional.interpolate(image[None], size=(height, width), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
    return torch.nn.functional.pad(resized, (0, size - width, 0, size - height))


def read_check_images(folder: Path, *, image_size: int, limit: int) -> list[Tensor]:
    """Up to `limit` images of a folder (sorted by name), letterboxed to image_size."""
    from torchvision.transforms.functional import pil_to_tensor

    from tardistill.visualize import IMAGE_SUFFIXES, load_rgb

    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return [letterbox(pil_to_tensor(load_rgb(p)).float() / 255, image_size) for p in paths]


def parity_images(folder: Path | None, *, image_size: int, limit: int) -> list[Tensor]:
    """The folder's images, or without one, `limit` seeded random images (which only show the graph runs)."""
    if limit < 1:
        raise TardistillError(f"the parity check needs at least one image (got {limit})")
    if folder is not None:
        return read_check_images(folder, image_size=image_size, limit=limit)
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, image_size, image_size, generator=generator) for _ in range(limit)]


@torch.no_grad()
def check_parity(detector: nn.Module, exported: Callable[[Tensor], Detections], *, images: list[Tensor],
                 score_threshold: float) -> dict:
    """Eager `detector` against an exported one on the same images; `passed` applies the tolerances.

    Returns:
        images, score_threshold, detections (reference detections clear of the cut), near_cut,
        ties, unmatched, missing, overlapping, max_box_diff, max_score_diff, box_tolerance,
        score_tolerance, passed (see deploy/same_detections.py).
    """
    reference = SingleImageDetector(detector).eval()
    heads = getattr(detector, "roi_heads", detector)  # Faster R-CNN's box NMS settings, or RetinaNet's
    image_side = max(max(image.shape[-2:]) for image in images)
    per_image = []
    for image in images:
        with nms_disabled(detector):
            before_nms = reference(image)
        per_image.append(compare_detections(reference(image), exported(image), before_nms=before_nms,
                                            score_threshold=score_threshold,
                                            box_tolerance=BOX_TOLERANCE_RELATIVE * image_side,
                                            nms_iou=heads.nms_thresh, max_detections=heads.detections_per_img))
    counts = ("near_cut", "ties", "unmatched", "missing", "overlapping")
    report = {"images": len(images), "score_threshold": score_threshold,
              "detections": sum(r["count_reference"] for r in per_image),
              **{key: sum(r[key] for r in per_image) for key in counts},
              "max_box_diff": max(r["max_box_diff"] for r in per_image),
              "max_score_diff": max(r["max_score_diff"] for r in per_image),
              "box_tolerance": BOX_TOLERANCE_RELATIVE * image_side, "score_tolerance": SCORE_TOLERANCE}
    report["passed"] = (report["unmatched"] == report["missing"] == report["overlapping"] == 0
                        and report["max_box_diff"] <= report["box_tolerance"]
                        and report["max_score_diff"] <= SCORE_TOLERANCE)
    return report


def format_parity(report: dict, *, against: str) -> str:
    """One line: the numbers, the tolerances and the verdict."""
    problems = [text for count, text in (
        (report["unmatched"], f"{report['unmatched']} exported detections that PyTorch does not find"),
        (report["missing"], f"{report['missing']} PyTorch detections lost"),
        (report["overlapping"], f"{report['overlapping']} overlapping pairs that NMS would not keep")) if count]
    spared = [text for count, text in (
        (report["ties"], f"{report['ties']} kept by another tie-break of NMS"),
        (report["near_cut"], f"{report['near_cut']} within {report['score_tolerance']:.0e} of the score cut")) if count]
    verdict = "PASS" if report["passed"] else "FAIL"
    return (f"parity {against} on {report['images']} images, scores >= {report['score_threshold']:g}: "
            f"{report['detections']} detections, {', '.join(problems) or 'all accounted for'}"
            f"{' (' + '; '.join(spared) + ')' if spared else ''}; max box diff {report['max_box_diff']:.2e} px "
            f"(tolerance {report['box_tolerance']:.2e}), max score diff {report['max_score_diff']:.2e} "
            f"(tolerance {report['score_tolerance']:.0e}): {verdict}")
