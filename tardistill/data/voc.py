"""Pascal VOC reader: VOCdevkit-style folders, every XML parsed once at construction."""

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tardistill.data.coco import clip_boxes_to_image, load_rgb_image, warn_box_problems
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


def _parse_objects(root, classes, xml_path):
    """Return (raw boxes [N,4] 0-based xyxy, labels, difficult flags) for every <object>."""
    label_of = {name: i + 1 for i, name in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for position, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in label_of:
            raise DataError(f"{xml_path}: class '{name}' not in data.classes")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml_path}: object #{position} ({name}) has no <bndbox>")
        what = f"object #{position} ({name})"
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
    except ElementTree.ParseError as error:
        raise DataError(f"{xml_path}: malformed XML ({error})") from None
    except OSError as error:
        raise DataError(f"{xml_path}: cannot read annotation ({error.strerror})") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{xml_path}: no <size> element")
    width = int(_number(size, "width", xml_path, "<size>"))
    height = int(_number(size, "height", xml_path, "<size>"))
    if width <= 0 or height <= 0:
        raise DataError(f"{xml_path}: image size {width}x{height} is not positive")
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
    # Main/<split>.txt holds one stem per line; class files add a column we do not need.
    stems = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{split_file}: split file lists no images")
    return stems


def _first_missing(paths, split_file):
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: file not found ({len(missing)} of {len(paths)} listed "
                        f"in {split_file} are missing)")


class VOCDetection(Dataset):
    """Detection dataset over root/{JPEGImages,Annotations,ImageSets/Main/<split>.txt}.

    With train=True, objects marked difficult are left out of the targets (standard practice);
    `ground_truth()` always keeps them, since the VOC metric ignores rather than counts them.
    """

    def __init__(self, root, split, *, classes=VOC_CLASSES, transforms=None, train=True):
        self.root = Path(root)
        self.classes = list(classes)
        self.transforms = transforms
        self.train = train
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        self.image_stems = _read_split(split_file)
        self._image_paths = [self.root / "JPEGImages" / f"{s}.jpg" for s in self.image_stems]
        xml_paths = [self.root / "Annotations" / f"{s}.xml" for s in self.image_stems]
        _first_missing(xml_paths, split_file)
        _first_missing(self._image_paths, split_file)
        self._annotations, messages = [], []
        for xml_path in xml_paths:
            annotation, problems = _parse_voc_xml(xml_path, self.classes)
            self._annotations.append(annotation)
            messages.extend(problems)
        warn_box_problems(messages)

    def ground_truth(self) -> dict:
        """Boxes, labels and difficult flags per image stem, difficult objects included."""
        return {stem: {key: a[key].copy() for key in ("boxes", "labels", "difficult")}
                for stem, a in zip(self.image_stems, self._annotations)}

    def __len__(self) -> int:
        return len(self.image_stems)

    def __getitem__(self, index):
        annotation = self._annotations[index]
        path = self._image_paths[index]
        image = load_rgb_image(path)
        if tuple(image.shape[1:]) != (annotation["height"], annotation["width"]):
            raise DataError(f"{path}: image is {image.shape[2]}x{image.shape[1]} but its XML "
                            f"says {annotation['width']}x{annotation['height']}")
        keep = ~annotation["difficult"] if self.train else np.ones_like(annotation["difficult"])
        target = {"boxes": torch.tensor(annotation["boxes"][keep], dtype=torch.float32),
                  "labels": torch.tensor(annotation["labels"][keep], dtype=torch.int64),
                  "image_id": index}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
