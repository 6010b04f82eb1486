"""COCO-format detection reader: the JSON is checked and parsed once, images load on demand."""

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from tardistill.errors import DataError

REQUIRED_KEYS = ("images", "annotations", "categories")
# Exporters often round x + w up by a fraction of a pixel; clipping that is not worth a warning.
CLIP_TOLERANCE = 1.0
# A broken export can have thousands of bad boxes; show the first few, then one count.
MAX_BOX_WARNINGS = 10


def load_rgb_image(path) -> torch.Tensor:
    """Read an image file as a float32 [3,H,W] RGB tensor in [0,1]."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    # PIL signals a broken file with many types (OSError, SyntaxError, ValueError, zlib.error,
    # DecompressionBombError); all of them mean the same thing to the user.
    except Exception as error:  # noqa: BLE001
        raise DataError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None
    return pil_to_tensor(rgb).float().div_(255.0)


def clip_boxes_to_image(boxes, width, height, *, names, source):
    """Apply the box policy: clip boxes that stick out, drop boxes with no area.

    Args:
        boxes: float array [N,4], xyxy in pixels.
        names: one label per box for messages, such as "annotation id 7".
        source: the file the boxes came from, named in messages.
    Returns:
        (clipped boxes float32 [N,4], keep mask bool [N], list of warning messages).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    has_area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    # Degenerate in the source (x2 <= x1) is dropped even if clipping would not change it.
    well_formed = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = finite & has_area & well_formed
    overshoot = np.abs(clipped - boxes).max(axis=1, initial=0) > CLIP_TOLERANCE
    messages = []
    for i in np.flatnonzero(~keep):
        messages.append(f"{source}: {names[i]} has an empty box {_fmt(boxes[i])} "
                        f"in the {width}x{height} image; dropped")
    for i in np.flatnonzero(keep & overshoot):
        messages.append(f"{source}: {names[i]} box {_fmt(boxes[i])} extends outside the "
                        f"{width}x{height} image; clipped to {_fmt(clipped[i])}")
    return clipped, keep, messages


def warn_box_problems(messages) -> None:
    """Emit box-policy warnings, the first few in full and the rest as one count."""
    for message in messages[:MAX_BOX_WARNINGS]:
        warnings.warn(message, stacklevel=3)
    if len(messages) > MAX_BOX_WARNINGS:
        warnings.warn(f"... and {len(messages) - MAX_BOX_WARNINGS} more box problems like "
                      f"the ones above", stacklevel=3)


def _fmt(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def read_coco_json(path) -> dict:
    """Load a COCO annotation file, with one-line errors for unreadable or malformed JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            coco = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: "
                        f"{error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read annotation file ({error})") from None
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a JSON object with keys {', '.join(REQUIRED_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in coco]
    if missing:
        raise DataError(f"{path}: missing required key(s): {', '.join(missing)}")
    for key in REQUIRED_KEYS:
        if not isinstance(coco[key], list):
            raise DataError(f"{path}: '{key}' must be a list")
    return coco


def _parse_categories(coco, path):
    """Return (sorted category ids, names); label i+1 stands for category_ids[i]."""
    try:
        pairs = sorted((int(c["id"]), str(c["name"])) for c in coco["categories"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    ids = [cid for cid, _ in pairs]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate category ids in 'categories'")
    if not ids:
        raise DataError(f"{path}: 'categories' is empty")
    return ids, [name for _, name in pairs]


def _parse_images(coco, path):
    """Return image records (id, file_name, width, height) in file order."""
    records = []
    for position, image in enumerate(coco["images"]):
        try:
            records.append({"id": int(image["id"]), "file_name": str(image["file_name"]),
                            "width": int(image["width"]), "height": int(image["height"])})
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: images[{position}] needs id, file_name, width and "
                            f"height") from None
    if not records:
        raise DataError(f"{path}: 'images' is empty")
    if len({r["id"] for r in records}) != len(records):
        raise DataError(f"{path}: duplicate image ids in 'images'")
    return records


def _read_annotation(ann, position, path):
    """Return (annotation id, image id, category id, xyxy box, is crowd) for one annotation."""
    ann_id = ann.get("id", f"#{position}") if isinstance(ann, dict) else f"#{position}"
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
        image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        crowd = bool(ann.get("iscrowd", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(f"{path}: annotation id {ann_id} needs image_id, category_id and a "
                        f"4-number bbox") from None
    return ann_id, image_id, category_id, [x, y, x + w, y + h], crowd


class CocoDetection(Dataset):
    """Detection dataset from a COCO JSON file and a folder of images.

    Crowd boxes (iscrowd=1) never enter the targets, in training or evaluation mode: the model
    neither learns from nor is scored against them here, while the COCO metric reads them from
    `coco_gt`. `train` is kept for symmetry with VOCDetection and does not change COCO targets.
    """

    def __init__(self, image_dir, annotation_file, *, transforms=None, train=True):
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.train = train
        self.coco_gt = read_coco_json(self.annotation_file)
        self.category_ids, self.classes = _parse_categories(self.coco_gt, self.annotation_file)
        self._images = _parse_images(self.coco_gt, self.annotation_file)
        self.image_ids = [record["id"] for record in self._images]
        self._check_image_files()
        self._targets = self._parse_targets()

    def _check_image_files(self) -> None:
        missing = [self.image_dir / r["file_name"] for r in self._images
                   if not (self.image_dir / r["file_name"]).is_file()]
        if missing:
            raise DataError(f"{missing[0]}: image file not found ({len(missing)} of "
                            f"{len(self._images)} images listed in {self.annotation_file} "
                            f"are missing)")

    def _parse_targets(self):
        """Group annotations per image into (boxes float32 [N,4], labels int64 [N])."""
        label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        index_of = {image_id: i for i, image_id in enumerate(self.image_ids)}
        grouped = [([], [], []) for _ in self._images]  # boxes, labels, names per image
        for position, ann in enumerate(self.coco_gt["annotations"]):
            ann_id, image_id, category_id, box, crowd = _read_annotation(
                ann, position, self.annotation_file)
            if category_id not in label_of:
                raise DataError(f"{self.annotation_file}: annotation id {ann_id} has unknown "
                                f"category_id {category_id} (not in 'categories')")
            if image_id not in index_of:
                raise DataError(f"{self.annotation_file}: annotation id {ann_id} refers to "
                                f"unknown image_id {image_id}")
            if crowd:
                continue
            boxes, labels, names = grouped[index_of[image_id]]
            boxes.append(box)
            labels.append(label_of[category_id])
            names.append(f"annotation id {ann_id}")
        targets, messages = [], []
        for record, (boxes, labels, names) in zip(self._images, grouped):
            source = f"{self.annotation_file} (image {record['file_name']})"
            clipped, keep, problems = clip_boxes_to_image(
                boxes, record["width"], record["height"], names=names, source=source)
            messages.extend(problems)
            targets.append((clipped[keep], np.asarray(labels, dtype=np.int64).reshape(-1)[keep]))
        warn_box_problems(messages)
        return targets

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):
        record = self._images[index]
        path = self.image_dir / record["file_name"]
        image = load_rgb_image(path)
        if tuple(image.shape[1:]) != (record["height"], record["width"]):
            raise DataError(f"{path}: image is {image.shape[2]}x{image.shape[1]} but "
                            f"{self.annotation_file} says {record['width']}x{record['height']}")
        boxes, labels = self._targets[index]
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(labels, dtype=torch.int64),
                  "image_id": record["id"]}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
