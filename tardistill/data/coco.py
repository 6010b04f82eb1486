"""COCO-format detection reader: the JSON is checked and parsed once, images load on demand."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from tardistill.data.bad_samples import BadSamples, load_sample
from tardistill.errors import DataError

REQUIRED_KEYS = ("images", "annotations", "categories")
# Exporters often round x + w up by a fraction of a pixel; clipping that is not worth a warning.
CLIP_TOLERANCE = 1.0
# A broken export can have thousands of bad boxes; show the first few, then one count.
MAX_BOX_WARNINGS = 10
# Larger sides are typos or overflowing numbers, not images (and would overflow float32 maths).
MAX_IMAGE_SIDE = 1 << 20
# What int() and float() raise on JSON values of the wrong type: a list, text, null, inf, NaN.
CONVERSION_ERRORS = (KeyError, TypeError, ValueError, OverflowError, AttributeError)


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


# Absurd coordinates become inf or NaN in float32 and are dropped as empty; no numpy warning needed.
@np.errstate(over="ignore", invalid="ignore")
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


def short(value, limit=60) -> str:
    """A value for an error message, cut to `limit` characters: a broken file can hold megabytes."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
    except (ValueError, RecursionError) as error:  # a 5000-digit number; arrays nested too deep
        raise DataError(f"{path}: malformed JSON ({short(error, 120)})") from None
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
    pairs = []
    for position, category in enumerate(coco["categories"]):
        try:
            pairs.append((int(category["id"]), str(category["name"])))
        except CONVERSION_ERRORS:
            raise DataError(f"{path}: categories[{position}] needs an integer 'id' and a "
                            f"'name'") from None
    pairs.sort()
    ids = [cid for cid, _ in pairs]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate category ids in 'categories'")
    if not ids:
        raise DataError(f"{path}: 'categories' is empty")
    return ids, [name for _, name in pairs]


def _read_image_record(image, position, path):
    """Return {id, file_name, width, height, position} for images[position], or raise DataError."""
    try:
        record = {"id": int(image["id"]), "file_name": image["file_name"],
                  "width": int(image["width"]), "height": int(image["height"]), "position": position}
    except CONVERSION_ERRORS:
        raise DataError(f"{path}: images[{position}] needs id, file_name, width and "
                        f"height") from None
    if not isinstance(record["file_name"], str) or not record["file_name"]:
        raise DataError(f"{path}: images[{position}] has no file_name string")
    if not all(0 < record[side] <= MAX_IMAGE_SIDE for side in ("width", "height")):
        raise DataError(f"{path}: images[{position}] ({short(record['file_name'])}) has size "
                        f"{record['width']}x{record['height']}, not 1..{MAX_IMAGE_SIDE} pixels a side")
    return record


def _parse_images(coco, path, bad: BadSamples):
    """Return image records in file order; bad records go to `bad`."""
    records = []
    for position, image in enumerate(coco["images"]):
        try:
            records.append(_read_image_record(image, position, path))
        except DataError as error:
            bad.reject(error)
    if not coco["images"]:
        raise DataError(f"{path}: 'images' is empty")
    if len({r["id"] for r in records}) != len(records):
        raise DataError(f"{path}: duplicate image ids in 'images'")
    return records


def _annotation_name(ann, position) -> str:
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    return f"annotations[{position}]" + ("" if ann_id is None else f" (id {short(ann_id)})")


def _read_annotation(ann, position, path):
    """Return (image id, category id, xyxy box, is crowd) for one annotation, or raise DataError."""
    try:
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise TypeError("bbox")
        x, y, w, h = (float(v) for v in bbox)
        image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        crowd = bool(ann.get("iscrowd", 0))
    except CONVERSION_ERRORS:
        raise DataError(f"{path}: {_annotation_name(ann, position)} needs image_id, category_id "
                        f"and a 4-number bbox") from None
    return image_id, category_id, [x, y, x + w, y + h], crowd


def _int_or_none(record, key):
    """record[key] as an int, or None when the record is too broken for that."""
    try:
        return int(record[key])
    except CONVERSION_ERRORS:
        return None


class CocoDetection(Dataset):
    """Detection dataset from a COCO JSON file and a folder of images.

    Crowd boxes (iscrowd=1) never enter the targets, in training or evaluation mode: the model
    neither learns from nor is scored against them here, while the COCO metric reads them from
    `coco_gt`. With on_bad_sample="skip", bad image records, missing image files and bad
    annotations are left out (an image goes with its bad annotation: its remaining labels alone
    would teach the model that the object is background), and `coco_gt` holds only what is kept.
    `train` decides what an image that fails to load becomes under "skip": another image in
    training, nothing in evaluation (see `load_sample`). A box the box policy drops leaves
    `coco_gt` too: it is scored as it is trained, as no object.
    image_dir None reads the annotations alone (for scoring a results file): the image files are
    not looked for, and no sample can be loaded.
    """

    def __init__(self, image_dir, annotation_file, *, transforms=None, train=True,
                 on_bad_sample="error"):
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.train = train
        self.bad_samples = BadSamples(on_bad_sample)
        self.coco_gt = read_coco_json(self.annotation_file)
        self.category_ids, self.classes = _parse_categories(self.coco_gt, self.annotation_file)
        self._images = _parse_images(self.coco_gt, self.annotation_file, self.bad_samples)
        if image_dir is not None:
            self._images = self._with_image_files(self._images)
        grouped, kept_annotations, bad_image_ids = self._group_annotations()
        self._keep_images(bad_image_ids, kept_annotations)
        self._targets = self._box_targets([grouped[r["id"]] for r in self._images])
        self.image_ids = [record["id"] for record in self._images]

    def _with_image_files(self, records):
        """The records whose image file exists; the others are bad samples."""
        # os.path.isfile, unlike Path.is_file, says False for a name too long or with a NUL byte.
        missing = [r for r in records if not os.path.isfile(self.image_dir / r["file_name"])]
        if missing and self.bad_samples.policy == "error":
            raise DataError(f"{self.image_dir / missing[0]['file_name']}: image file not found "
                            f"({len(missing)} of {len(records)} images listed in "
                            f"{self.annotation_file} are missing)")
        for r in missing:
            self.bad_samples.reject(DataError(
                f"{self.image_dir / r['file_name']}: image file not found (images[{r['position']}] "
                f"of {self.annotation_file})"))
        missing_positions = {r["position"] for r in missing}
        return [r for r in records if r["position"] not in missing_positions]

    def _group_annotations(self):
        """Non-crowd (boxes, labels, names, annotations) per image id; positions of good annotations;
        bad images."""
        label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        listed_ids = {_int_or_none(image, "id") for image in self.coco_gt["images"]}
        grouped = {r["id"]: ([], [], [], []) for r in self._images}  # boxes, labels, names, annotations
        kept, bad_image_ids = [], set()
        for position, ann in enumerate(self.coco_gt["annotations"]):
            try:
                image_id, category_id, box, crowd = self._checked_annotation(ann, position, label_of,
                                                                             listed_ids)
            except DataError as error:
                self.bad_samples.reject(error)
                bad_image_ids.add(_int_or_none(ann, "image_id"))
                continue
            if image_id not in grouped:
                continue  # its image was skipped already; that image is the one bad sample
            kept.append(position)
            if not crowd:
                boxes, labels, names, annotations = grouped[image_id]
                boxes.append(box)
                labels.append(label_of[category_id])
                names.append(f"annotation id {short(ann.get('id', f'#{position}'))}")
                annotations.append(ann)
        return grouped, kept, bad_image_ids

    def _checked_annotation(self, ann, position, label_of, listed_ids):
        image_id, category_id, box, crowd = _read_annotation(ann, position, self.annotation_file)
        name = _annotation_name(ann, position)
        if category_id not in label_of:
            raise DataError(f"{self.annotation_file}: {name} has unknown category_id {category_id} "
                            f"(not in 'categories')")
        if image_id not in listed_ids:
            raise DataError(f"{self.annotation_file}: {name} refers to unknown image_id {image_id}")
        return image_id, category_id, box, crowd

    def _keep_images(self, bad_image_ids, kept_annotations) -> None:
        """Drop images with a bad annotation; rebuild `coco_gt` when anything was left out."""
        self._images = [r for r in self._images if r["id"] not in bad_image_ids]
        if not self._images:
            raise DataError(f"{self.annotation_file}: no usable images left "
                            f"({len(self.bad_samples.reasons)} bad samples skipped)")
        if not self.bad_samples.reasons:
            return  # nothing skipped: coco_gt stays the file's own dict
        kept_ids = {r["id"] for r in self._images}
        annotations = self.coco_gt["annotations"]
        self.coco_gt = {**self.coco_gt,
                        "images": [self.coco_gt["images"][r["position"]] for r in self._images],
                        "annotations": [annotations[p] for p in kept_annotations
                                        if _int_or_none(annotations[p], "image_id") in kept_ids]}

    def _box_targets(self, grouped):
        """(boxes float32 [N,4], labels int64 [N]) per image, after the box policy."""
        targets, messages, dropped = [], [], set()
        for record, (boxes, labels, names, annotations) in zip(self._images, grouped):
            source = f"{self.annotation_file} (image {record['file_name']})"
            clipped, keep, problems = clip_boxes_to_image(
                boxes, record["width"], record["height"], names=names, source=source)
            messages.extend(problems)
            targets.append((clipped[keep], np.asarray(labels, dtype=np.int64).reshape(-1)[keep]))
            dropped.update(id(annotation) for annotation, kept in zip(annotations, keep) if not kept)
        warn_box_problems(messages)
        if dropped:  # the very annotation dicts of coco_gt: identity tells them apart, whatever their ids
            self.coco_gt = {**self.coco_gt,
                            "annotations": [a for a in self.coco_gt["annotations"] if id(a) not in dropped]}
        return targets

    def _forget(self, index) -> None:
        """Leave an image that failed to load out of the ground truth (under 'skip')."""
        image_id = self.image_ids[index]
        self.coco_gt = {**self.coco_gt,
                        "images": [im for im in self.coco_gt["images"] if _int_or_none(im, "id") != image_id],
                        "annotations": [a for a in self.coco_gt["annotations"]
                                        if _int_or_none(a, "image_id") != image_id]}

    @property
    def num_objects(self) -> int:
        """How many objects the targets hold (crowd regions and dropped boxes not counted)."""
        return sum(len(labels) for _, labels in self._targets)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every image, from the annotations: batches group by aspect ratio."""
        return [(record["width"], record["height"]) for record in self._images]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):
        return load_sample(self._load, index, len(self), self.bad_samples, substitute=self.train,
                           forget=self._forget)

    def _load(self, index):
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
