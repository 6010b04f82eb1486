"""The detector that `eval` and `predict` run, from whichever file the user has, on the data's classes.

A model comes from one of:
- a tardistill checkpoint (`--checkpoint runs/x/best.safetensors`): its own config and class list;
- a torchvision weights file (`--checkpoint fasterrcnn_..._coco.pth`: a state dict, a reference-script
  checkpoint, or a .safetensors without tardistill's metadata), built as the config's
  `model.architecture` with the classes of `distill.teacher_classes` (default: the data's);
- the config's distillation teacher (`--teacher`), loaded as `tardistill distill` loads it.

Where the model's classes differ from the data's, its detections are relabelled onto the data's
labels: by name, or by `distill.class_map`; detections of classes the data lacks are dropped.
Nothing is re-initialised: a zoo file must fill every tensor, its box predictor included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tardistill.config import Config
from tardistill.distill.class_map import ClassMap, resolve_class_map
from tardistill.distill.teacher import load_teacher, teacher_class_names
from tardistill.engine.setup import load_detector, zoo_detector_from_file
from tardistill.errors import ConfigError, TardistillError
from tardistill.models.checkpoint import read_checkpoint_meta


class RelabelledDetector(nn.Module):
    """A detector whose detections are moved onto another label set by a ClassMap (in eval mode)."""

    def __init__(self, detector: nn.Module, class_map: ClassMap) -> None:
        super().__init__()
        self.detector = detector
        self.class_map = class_map

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [self.class_map.student_detections(output) for output in self.detector(images)]


def is_tardistill_checkpoint(path: Path) -> bool:
    """Whether `path` is a checkpoint tardistill wrote (safetensors with its config and classes)."""
    if not path.is_file():
        raise TardistillError(f"{path}: checkpoint not found")
    return path.suffix == ".safetensors" and "config" in read_checkpoint_meta(path)


def load_model(config: Config, *, checkpoint: Path | None, teacher: bool, data_classes: Sequence[str] | None,
               model_keys: dict[str, Any] | None = None) -> tuple[nn.Module, list[str], str]:
    """(detector, its class names, what it was loaded from) for `--checkpoint` or `--teacher`.

    Args:
        data_classes: the class list of a torchvision weights file without distill.teacher_classes;
            None where the data cannot be read.
        model_keys: model keys given with --set, applied to a tardistill checkpoint or refused
            (setup.inference_settings); a torchvision weights file is built from the config's model
            section, so they apply to it directly.
    """
    if teacher == (checkpoint is not None):
        raise ConfigError("give a checkpoint or weights file (--checkpoint), or --teacher for the config's "
                          "distill.teacher, not both")
    if teacher:
        if not config.distill.teacher:
            raise ConfigError("--teacher: the config names no distill.teacher")
        detector, classes = load_teacher(config.distill, config.model)
        return detector, classes, config.distill.teacher
    if is_tardistill_checkpoint(checkpoint):
        detector, meta = load_detector(checkpoint, model_keys=model_keys)
        return detector, list(meta["classes"]), str(checkpoint)
    if not config.model.architecture:
        raise ConfigError(f"{checkpoint}: not a tardistill checkpoint. To run a torchvision weights file, name "
                          "its builder in model.architecture (and its classes in distill.teacher_classes); to "
                          "run the config's teacher, use --teacher")
    if config.distill.teacher_classes:
        classes = teacher_class_names(config.distill.teacher_classes)
    elif data_classes:
        classes = list(data_classes)
    else:
        raise ConfigError(f"distill.teacher_classes: name the classes of {checkpoint} (coco, or a list of "
                          "names): the data's classes, the default, cannot be read")
    detector = zoo_detector_from_file(config.model, config.model.architecture, len(classes), checkpoint,
                                      key="model.architecture")
    return detector, classes, str(checkpoint)


def on_data_classes(detector: nn.Module, model_classes: Sequence[str], data_classes: Sequence[str], *,
                    class_map: dict | str | None, source: str) -> nn.Module:
    """`detector` itself, or wrapped so that its labels are the data's (see the module docstring).

    Args:
        class_map: distill.class_map; used only where the class lists differ, so a student scored
            on its own data never reads its teacher's map.
    """
    if list(model_classes) == list(data_classes):
        return detector
    return RelabelledDetector(detector, resolve_class_map(class_map, model_classes, data_classes, teacher=source))


def load_model_on_data_classes(config: Config, data_classes: Sequence[str], *, checkpoint: Path | None = None,
                               teacher: bool = False, model_keys: dict[str, Any] | None = None) -> nn.Module:
    """The model of `--checkpoint` or `--teacher`, its detections labelled as the data's classes."""
    detector, classes, source = load_model(config, checkpoint=checkpoint, teacher=teacher,
                                           data_classes=data_classes, model_keys=model_keys)
    return on_data_classes(detector, classes, data_classes, class_map=config.distill.class_map, source=source)
