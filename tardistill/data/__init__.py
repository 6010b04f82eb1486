"""Detection datasets, transforms and loaders.

Every dataset item is `(image, target)`, the format torchvision's detectors take:

- image: float32 tensor [3,H,W], RGB, values in [0,1].
- target["boxes"]: float32 tensor [N,4], xyxy, in pixels of that image.
- target["labels"]: int64 tensor [N], values in 1..K; 0 is background and never appears.
- target["image_id"]: int, the COCO image id (COCO, synth) or the dataset index (VOC).

Every dataset has `.classes: list[str]`, where label i+1 means classes[i]. An image with no
objects is valid: boxes has shape [0,4] and labels shape [0].

Box policy, the same for every reader: a box that sticks out of the image is clipped to it (with
a warning unless it overshoots by at most 1 px), and a box with no area, before or after
clipping, is dropped with a warning naming the file and the annotation.

Bad-sample policy (`on_bad_sample`, see bad_samples.py): a malformed record or an image that cannot
be loaded raises a DataError naming the file and the record ("error", the default), or is left out
with its reason kept in `dataset.bad_samples` ("skip").
"""

from tardistill.data.coco import CocoDetection
from tardistill.data.loader import build_dataset, build_loader, collate_detection
from tardistill.data.synthetic import SYNTH_CLASSES, generate_synthetic, synthetic_split_paths
from tardistill.data.transforms import (
    Compose,
    PhotometricJitter,
    RandomHorizontalFlip,
    Resize,
    build_eval_transforms,
    build_train_transforms,
)
from tardistill.data.voc import VOC_CLASSES, VOCDetection, read_voc_annotation

__all__ = [
    "CocoDetection", "VOCDetection", "VOC_CLASSES", "read_voc_annotation",
    "SYNTH_CLASSES", "generate_synthetic", "synthetic_split_paths",
    "Compose", "RandomHorizontalFlip", "PhotometricJitter", "Resize",
    "build_train_transforms", "build_eval_transforms",
    "build_dataset", "build_loader", "collate_detection",
]
