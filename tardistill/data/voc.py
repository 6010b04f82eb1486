"""Pascal VOC reader: VOCdevkit-style folders, every XML parsed once at construction."""

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tardistill.data.bad_samples import BadSamples, load_sample
from tardistill.data.coco import (MAX_IMAGE_SIDE, clip_boxes_to_image, load_rgb_image, short,
                                  warn_box_problems)
from tardistill.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _number(element, tag, xml_path, what):
    text = element.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"{xml_path}: {what} has no numeric <{tag}>") from None


def _side(size, tag, xml_path) -> int:
    """<width> or <height> of <size>: a whole number of pixels, 1..MAX_IMAGE_SIDE."""
    value = _number(size, tag, xml_path, "<size>")
    if not (1 <= value <= MAX_IMAGE_SIDE and value == int(value)):  # also false for NaN
        raise DataError(f"{xml_path}: <size> <{tag}> is {value:g}, not a whole number of pixels "
                        f"in 1..{MAX_IMAGE_SIDE}")
    return int(value)


def _parse_objects(root, classes, xml_path):
    """Return (raw boxes [N,4] 0-based xyxy, labels, difficult flags) for every <object>."""
    label_of = {name: i + 1 for i, name in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for position, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        what = f"object #{position} ({short(name)})"
        if name not in label_of:
            raise DataError(f"{xml_path}: object #{position}: class '{short(name)}' not in data.classes")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml_path}: {what} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, tag, xml_path, what)
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        # VOC pixels are numbered from 1 and xmax/ymax name the last pixel inside the box, so
        # the 0-based left/top edges are xmin-1, ymin-1 while xmax, ymax are already the
        # 0-based right/bottom edges.
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(label_of[name])
        difficult.append((obj.findtext("difficult") or "0").strip() in ("1", "1.0", "true"))
    return boxes, labels, difficult


def _parse_voc_xml(xml_path, classes):
    """Parse one VOC XML file; returns (annotation dict, box-policy warning messages)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    # ParseError for broken XML, LookupError for an unknown encoding="..." declaration,
    # ValueError for bytes that do not decode.
    except (ElementTree.ParseError, LookupError, ValueError) as error:
        raise DataError(f"{xml_path}: malformed XML ({short(error, 120)})") from None
    except OSError as error:
        raise DataError(f"{xml_path}: cannot read annotation ({error.strerror})") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{xml_path}: no <size> element")
    width, height = _side(size, "width", xml_path), _side(size, "height", xml_path)
    boxes, labels, difficult = _parse_objects(root, classes, xml_path)
    names = [f"object #{i}" for i in range(len(boxes))]
    clipped, keep, messages = clip_boxes_to_image(boxes, width, height, names=names,
                                                  source=str(xml_path))
    annotation = {
        "boxes": clipped[keep],
        "labels": np.asarray(labels, dtype=np.int64).reshape(-1)[keep],
        "difficult": np.asarray(difficult, dtype=np.bool_).reshape(-1)[keep],
        "width": width,
        "height": height,
    }
    return annotation, messages


def read_voc_annotation(xml_path, classes) -> dict:
    """Read one VOC XML file into 0-based xyxy boxes, labels 1..K and difficult flags.

    Returns:
        dict(boxes float32 [N,4], labels int64 [N], difficult bool [N], width, height).
        Boxes outside the image are clipped and empty ones dropped, with a warning.
    """
    annotation, messages = _parse_voc_xml(xml_path, classes)
    warn_box_problems(messages)
    return annotation


def _read_split(split_file):
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found")
    try:
        text = split_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{split_file}: cannot read split file ({short(error, 120)})") from None
    # Main/<split>.txt holds one stem per line; class files add a column we do not need.
    stems = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{split_file}: split file lists no images")
    return stems


def _missing_files(stems, paths, split_file, bad: BadSamples) -> set[str]:
    """Stems whose file is missing: all named in one error, or each a bad sample under 'skip'."""
    missing = [(stem, path) for stem, path in zip(stems, paths) if not os.path.isfile(path)]
    if missing and bad.policy == "error":
        raise DataError(f"{missing[0][1]}: file not found ({len(missing)} of {len(paths)} listed "
                        f"in {split_file} are missing)")
    for _, path in missing:
        bad.reject(DataError(f"{path}: file not found (listed in {split_file})"))
    return {stem for stem, _ in missing}


class VOCDetection(Dataset):
    """Detection dataset over root/{JPEGImages,Annotations,ImageSets/Main/<split>.txt}.

    With train=True, objects marked difficult are left out of the targets (standard practice);
    `ground_truth()` always keeps them, since the VOC metric ignores rather than counts them.
    With on_bad_sample="skip", an image whose XML is bad or whose files are missing is left out,
    and one that fails to load is replaced (train) or left out of the evaluation (see `load_sample`).
    """

    def __init__(self, root, split, *, classes=VOC_CLASSES, transforms=None, train=True,
                 on_bad_sample="error"):
        self.root = Path(root)
        self.classes = list(classes)
        self.transforms = transforms
        self.train = train
        self.bad_samples = BadSamples(on_bad_sample)
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        stems = _read_split(split_file)
        xml_paths = [self.root / "Annotations" / f"{s}.xml" for s in stems]
        image_paths = [self.root / "JPEGImages" / f"{s}.jpg" for s in stems]
        skipped = (_missing_files(stems, xml_paths, split_file, self.bad_samples)
                   | _missing_files(stems, image_paths, split_file, self.bad_samples))
        self.image_stems, self._image_paths, self._xml_paths, self._annotations, messages = [], [], [], [], []
        for stem, xml_path, image_path in zip(stems, xml_paths, image_paths):
            if stem in skipped:
                continue
            try:
                annotation, problems = _parse_voc_xml(xml_path, self.classes)
            except DataError as error:
                self.bad_samples.reject(error)
                continue
            self.image_stems.append(stem)
            self._image_paths.append(image_path)
            self._xml_paths.append(xml_path)
            self._annotations.append(annotation)
            messages.extend(problems)
        if not self.image_stems:
            raise DataError(f"{split_file}: no usable images left "
                            f"({len(self.bad_samples.reasons)} bad samples skipped)")
        warn_box_problems(messages)
        self._forgotten: set[str] = set()

    def ground_truth(self) -> dict:
        """Boxes, labels and difficult flags per image stem, difficult objects included."""
        return {stem: {key: a[key].copy() for key in ("boxes", "labels", "difficult")}
                for stem, a in zip(self.image_stems, self._annotations) if stem not in self._forgotten}

    def _forget(self, index) -> None:
        """Leave an image that failed to load out of the ground truth (under 'skip')."""
        self._forgotten.add(self.image_stems[index])

    @property
    def num_objects(self) -> int:
        """How many objects the annotations hold (difficult ones included)."""
        return sum(len(annotation["labels"]) for annotation in self._annotations)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every image, from the annotations: batches group by aspect ratio."""
        return [(a["width"], a["height"]) for a in self._annotations]

    def __len__(self) -> int:
        return len(self.image_stems)

    def __getitem__(self, index):
        return load_sample(self._load, index, len(self), self.bad_samples, substitute=self.train,
                           forget=self._forget)

    def _load(self, index):
        annotation = self._annotations[index]
        path = self._image_paths[index]
        image = load_rgb_image(path)
        if tuple(image.shape[1:]) != (annotation["height"], annotation["width"]):
            raise DataError(f"{self._xml_paths[index]}: <size> says {annotation['width']}x{annotation['height']} but the "
                            f"image {path} is {image.shape[2]}x{image.shape[1]}")
        keep = ~annotation["difficult"] if self.train else np.ones_like(annotation["difficult"])
        target = {"boxes": torch.tensor(annotation["boxes"][keep], dtype=torch.float32),
                  "labels": torch.tensor(annotation["labels"][keep], dtype=torch.int64),
                  "image_id": index}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
