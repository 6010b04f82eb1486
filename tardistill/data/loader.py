"""Build a dataset by format name, and a deterministic DataLoader for detection batches."""

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tardistill.data.coco import CocoDetection
from tardistill.data.synthetic import synthetic_split_paths
from tardistill.data.voc import VOC_CLASSES, VOCDetection
from tardistill.errors import ConfigError, DataError


def _coco_annotation_file(root, split):
    # Official COCO names files instances_<split>.json; plain <split>.json is the other habit.
    official = root / "annotations" / f"instances_{split}.json"
    return official if official.is_file() else root / "annotations" / f"{split}.json"


def _check_classes(dataset, classes, source):
    if classes is not None and list(classes) != dataset.classes:
        raise DataError(f"{source}: its categories {dataset.classes} differ from data.classes "
                        f"{list(classes)}")
    return dataset


def _build_coco(root, split, *, classes, **options):
    annotation_file = _coco_annotation_file(root, split)
    dataset = CocoDetection(root / split, annotation_file, **options)
    return _check_classes(dataset, classes, annotation_file)


def _build_synth(root, split, *, classes, **options):
    image_dir, annotation_file = synthetic_split_paths(root, split)
    dataset = CocoDetection(image_dir, annotation_file, **options)
    return _check_classes(dataset, classes, annotation_file)


def _build_voc(root, split, *, classes, **options):
    return VOCDetection(root, split, classes=VOC_CLASSES if classes is None else classes, **options)


DATASET_BUILDERS = {"coco": _build_coco, "voc": _build_voc, "synth": _build_synth}


def build_dataset(fmt, root, split, *, train, classes=None, transforms=None, on_bad_sample="error"):
    """Build a detection dataset of format "coco", "voc" or "synth".

    Args:
        classes: class names; VOC labels follow them (default VOC_CLASSES), COCO and synth
            check them against the annotation file's categories when given.
        on_bad_sample: "error" stops at the first bad record or image; "skip" leaves it out and
            keeps the reason in `dataset.bad_samples` (see data/bad_samples.py).
    """
    if fmt not in DATASET_BUILDERS:
        raise ConfigError(f"unknown dataset format '{fmt}'; valid: {', '.join(DATASET_BUILDERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    return DATASET_BUILDERS[fmt](root, split, train=train, classes=classes, transforms=transforms,
                                 on_bad_sample=on_bad_sample)


def collate_detection(batch):
    """Keep images and targets as lists: detection images differ in size and box count."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def build_loader(dataset, *, batch_size, shuffle, num_workers=0, seed=0, drop_last=False):
    """DataLoader whose shuffling order and worker seeds follow `seed`."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate_detection, generator=generator, drop_last=drop_last,
                      persistent_workers=num_workers > 0)
