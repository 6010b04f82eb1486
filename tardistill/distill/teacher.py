"""The teacher of a distillation run: a tardistill checkpoint, or a torchvision zoo detector whose
weights come from a local file (a torchvision .pth, a reference-script checkpoint or safetensors)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from tardistill.config import DistillConfig, ModelConfig, config_from_dict
from tardistill.engine.setup import load_detector, zoo_detector_from_file, zoo_model_config
from tardistill.errors import ConfigError
from tardistill.models.checkpoint import read_checkpoint_meta
from tardistill.models.zoo import coco_classes, zoo_architecture


def load_teacher(terms: DistillConfig, student: ModelConfig) -> tuple[nn.Module, list[str]]:
    """The teacher named by `terms` and its class names (background excluded).

    A zoo teacher is built with the student's image size and proposal settings, so both share one
    preprocessed batch, and must take every tensor from its weights file: a teacher that kept
    part of its random initialisation would teach noise.
    """
    if not terms.teacher_architecture:
        if terms.teacher_classes is not None:
            raise ConfigError("distill.teacher_classes: only for a teacher named by "
                              "distill.teacher_architecture; a tardistill checkpoint holds its class list")
        teacher, meta = load_detector(terms.teacher)
        return teacher, list(meta["classes"])
    zoo_architecture(terms.teacher_architecture, key="distill.teacher_architecture")  # before the classes
    classes = teacher_class_names(terms.teacher_classes)
    teacher = zoo_detector_from_file(student, terms.teacher_architecture, len(classes), terms.teacher,
                                     key="distill.teacher_architecture")
    return teacher, classes


def teacher_model_config(terms: DistillConfig, student: ModelConfig) -> ModelConfig:
    """The teacher's architecture, with no weights file named: a checkpoint's own model section, or
    the zoo builder with the student's image size and proposal settings."""
    if not terms.teacher_architecture:
        model = config_from_dict(read_checkpoint_meta(terms.teacher)["config"], source=str(terms.teacher)).model
        return replace(model, weights=None, backbone_weights=None)
    return zoo_model_config(student, terms.teacher_architecture, key="distill.teacher_architecture")


def teacher_class_names(spec: list[str] | str | None) -> list[str]:
    """distill.teacher_classes: a list of names, or "coco" for torchvision's COCO weights."""
    if spec == "coco":
        return coco_classes()
    if isinstance(spec, list) and spec:
        return list(spec)
    raise ConfigError("distill.teacher_classes: name the zoo teacher's classes: coco (torchvision's "
                      f"COCO weights) or a list of class names without the background; got {spec!r}")
