"""Build a dataset by format name, check that splits agree, and a deterministic DataLoader."""

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tardistill.data.coco import CocoDetection
from tardistill.data.synthetic import synthetic_split_paths
from tardistill.data.voc import VOC_CLASSES, VOCDetection
from tardistill.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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


def check_splits_agree(splits: dict) -> None:
    """Checked before training: each split has the first's categories, and the first has objects.

    Args:
        splits: split name -> dataset, the one trained on first ({"train": ..., "val": ..., ...}).
    A category missing from a split, or an id that names another class there, would score every AP
    against the wrong class, or fail at the first validation: an error. The training split without
    objects has nothing to teach: an error. Another split without them has no AP: a warning.
    """
    (first_name, first), *others = splits.items()
    if first.num_objects == 0:
        raise DataError(f"{_source(first)}: the {first_name} split has no annotated objects to learn from")
    for name, dataset in others:
        difference = _category_difference(_categories(first), _categories(dataset), first_name)
        if difference:
            raise DataError(f"{_source(dataset)}: its categories differ from the {first_name} split's "
                            f"({_source(first)}): {difference}; every split needs the same categories, "
                            "with the same ids")
        if dataset.num_objects == 0:
            log.warning("%s: the %s split has no annotated objects; its AP is undefined (-1)",
                        _source(dataset), name)


def _categories(dataset) -> dict[int, str]:
    """Category id -> name; VOC's ids are the positions in its class list."""
    ids = getattr(dataset, "category_ids", range(1, len(dataset.classes) + 1))
    return dict(zip(ids, dataset.classes))


def _category_difference(reference: dict[int, str], other: dict[int, str], reference_name: str) -> str:
    """What differs between two id -> name maps, in a few words ("" when nothing does)."""
    if reference == other:
        return ""
    parts = []
    if only := sorted(set(reference.values()) - set(other.values())):
        parts.append(f"only in {reference_name}: {', '.join(only)}")
    if only := sorted(set(other.values()) - set(reference.values())):
        parts.append(f"not in {reference_name}: {', '.join(only)}")
    if not parts:
        id_in_reference = {name: cid for cid, name in reference.items()}
        moved = [f"'{name}' is id {cid} here, {id_in_reference[name]} in {reference_name}"
                 for cid, name in sorted(other.items()) if id_in_reference[name] != cid]
        parts.append("the same names under other ids: " + ", ".join(moved[:3]))
    return "; ".join(parts)


def _source(dataset) -> str:
    return str(getattr(dataset, "annotation_file", None) or getattr(dataset, "root", "dataset"))


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
