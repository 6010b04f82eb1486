"""Drawing detections on images, so a person can look at what a model does."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.transforms.functional import pil_to_tensor

from tardistill.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def draw_detections(image: Image.Image, detections: dict[str, torch.Tensor], classes: list[str], *,
                    score_threshold: float = 0.5, scale: int = 1) -> Image.Image:
    """A copy of `image` (optionally upscaled for legibility) with labelled boxes above the threshold."""
    canvas = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for box, label, score in zip(detections["boxes"].tolist(), detections["labels"].tolist(),
                                 detections["scores"].tolist()):
        if score < score_threshold:
            continue
        colour = PALETTE[(label - 1) % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        draw.text((x1 + 2, max(0, y1 - 11)), f"{classes[label - 1]} {score:.2f}", fill=colour)
    return canvas


def load_rgb(path: Path) -> Image.Image:
    """An image file as RGB, with a one-line error if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


@torch.no_grad()
def predict_folder(detector: nn.Module, classes: list[str], images: Path, out: Path, *,
                   score_threshold: float = 0.5, scale: int = 2) -> int:
    """Run `detector` on every image in a folder and write annotated PNGs to `out`."""
    if not images.is_dir():
        raise DataError(f"{images}: not a directory of images")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out.mkdir(parents=True, exist_ok=True)
    detector.eval()
    for path in paths:
        image = load_rgb(path)
        (output,) = detector([pil_to_tensor(image).float() / 255])
        drawn = draw_detections(image, output, classes, score_threshold=score_threshold, scale=scale)
        drawn.save(out / f"{path.stem}.png")
    return len(paths)


@torch.no_grad()
def detection_grid(checkpoints: list[str | Path], image_paths: list[Path], *, score_threshold: float = 0.5,
                   scale: int = 2) -> Image.Image:
    """One row per checkpoint, the same images in each column, detections drawn."""
    from tardistill.engine.setup import load_detector

    images = [load_rgb(p) for p in image_paths]
    rows = []
    for checkpoint in checkpoints:
        detector, meta = load_detector(checkpoint)
        outputs = detector.eval()([pil_to_tensor(im).float() / 255 for im in images])
        rows.append([draw_detections(im, o, meta["classes"], score_threshold=score_threshold, scale=scale)
                     for im, o in zip(images, outputs)])
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * len(images), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            grid.paste(tile, (c * width, r * height))
    return grid
