"""Distilling onto another label set: the teacher's class outputs gathered onto the student's classes.

`distill.class_map` maps each student class name to a teacher class, by name or by label (the
teacher's output index: 1..K, 0 is the background; for torchvision's COCO weights the label is the
COCO category id). Student classes it leaves out are matched to the teacher class of the same name,
so no map is needed when every student class name is one of the teacher's.
Before the head terms, the teacher's outputs are rearranged into the student's columns:
- softmax logits (Faster R-CNN): the mapped columns; the background column absorbs every teacher
  class the student lacks (log-sum-exp), so at tau = 1 the gathered softmax is exactly the teacher's
  probability of each student class and of "none of them";
- sigmoid logits (RetinaNet): the mapped columns; each class is scored on its own, so the
  others are simply left out;
- class-specific box deltas (Faster R-CNN): the mapped classes' four deltas.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from tardistill.config import read_yaml_mapping
from tardistill.errors import ConfigError


@dataclass(frozen=True)
class ClassMap:
    """teacher_labels[c]: the teacher label of student label c (index 0, the background, maps to 0).

    num_teacher_classes: the teacher's outputs, background included.
    """

    teacher_labels: tuple[int, ...]
    num_teacher_classes: int

    @property
    def num_student_classes(self) -> int:
        """The student's outputs, background included."""
        return len(self.teacher_labels)

    def softmax_logits(self, logits: Tensor) -> Tensor:
        """Tensor[R, T] -> Tensor[R, S]; the background column log-sum-exps the unmapped teacher columns."""
        mapped = torch.tensor(self.teacher_labels[1:], device=logits.device, dtype=torch.long)
        unmapped = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
        unmapped[mapped] = False  # column 0, the teacher's background, stays in the background
        background = torch.logsumexp(logits[:, unmapped], dim=1, keepdim=True)
        return torch.cat([background, logits[:, mapped]], dim=1)

    def sigmoid_logits(self, logits: Tensor) -> Tensor:
        """Tensor[..., T] -> Tensor[..., S]: the mapped columns (column 0 is torchvision's unused one)."""
        return logits[..., torch.tensor(self.teacher_labels, device=logits.device, dtype=torch.long)]

    def class_deltas(self, deltas: Tensor) -> Tensor:
        """Tensor[R, 4 * T] -> Tensor[R, 4 * S]: each student class gets its teacher class's deltas."""
        per_class = deltas.reshape(deltas.shape[0], -1, 4)
        labels = torch.tensor(self.teacher_labels, device=deltas.device, dtype=torch.long)
        return per_class[:, labels].reshape(deltas.shape[0], -1)

    def student_detections(self, detections: dict[str, Tensor]) -> dict[str, Tensor]:
        """A teacher's detections (boxes, scores, labels) on the student's labels.

        Detections of teacher classes the student lacks are dropped: scored on the student's data,
        they are objects of no class there, as COCO's evaluation ignores categories absent from
        its ground truth.
        """
        student_of = torch.zeros(self.num_teacher_classes, dtype=torch.long, device=detections["labels"].device)
        student_of[list(self.teacher_labels[1:])] = torch.arange(1, self.num_student_classes,
                                                                 device=student_of.device)
        labels = student_of[detections["labels"]]
        keep = labels > 0
        return {**{k: v[keep] for k, v in detections.items()}, "labels": labels[keep]}


def resolve_class_map(mapping: Mapping[str, Any] | str | None, teacher_classes: Sequence[str],
                      student_classes: Sequence[str], *, teacher: str) -> ClassMap | None:
    """The ClassMap for `distill.class_map`, or None where teacher and student share one class list.

    Args:
        mapping: student class name -> teacher class name or label, or the path of a YAML file
            holding that mapping. Student classes it leaves out (all of them, for None) map to the
            teacher class of the same name.
        teacher_classes, student_classes: the class names without the background.
        teacher: the teacher's file, for error messages.
    """
    entries = {} if mapping is None else _entries(mapping)
    if not entries and list(teacher_classes) == list(student_classes):
        return None
    unknown = sorted(set(entries) - set(student_classes))
    if unknown:
        raise ConfigError(f"distill.class_map: {', '.join(unknown)} not among the student's classes "
                          f"({', '.join(student_classes)})")
    unnamed = [name for name in student_classes if name not in entries and teacher_classes.count(name) != 1]
    if unnamed:
        raise ConfigError(missing_classes_message(unnamed, teacher_classes, teacher=teacher))
    labels = [_teacher_label(name, entries, teacher_classes) for name in student_classes]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        names = [f"{teacher_classes[label - 1]} (label {label})" for label in repeated]
        raise ConfigError(f"distill.class_map: several student classes map to teacher class "
                          f"{', '.join(names)}; each needs its own teacher class")
    return ClassMap((0, *labels), len(teacher_classes) + 1)


def _entries(mapping: Mapping[str, Any] | str) -> dict[str, Any]:
    """The map's entries, read from its YAML file when `mapping` is a path."""
    if isinstance(mapping, str):
        mapping = read_mapping(Path(mapping))
    return {str(name): value for name, value in mapping.items()}


def missing_classes_message(names: Sequence[str], teacher_classes: Sequence[str], *, teacher: str) -> str:
    """Which student classes no teacher class matches by name, and the `class_map` YAML that would map them.

    Each entry proposes the closest teacher name, if one is close, for the user to check; the
    others are null, which is refused until a teacher class name or label replaces it.
    """
    lines = [f"distill.class_map: the teacher ({teacher}) has no class named {', '.join(names)} "
             f"(student classes are matched to the teacher's by name; the teacher's are "
             f"{_first_few(teacher_classes)}). Map each one to a teacher class name or label "
             f"(1..{len(teacher_classes)}) in the config (docs/PRETRAINED.md):",
             "distill:", "  class_map:"]
    for name in names:
        close = difflib.get_close_matches(name, [c for c in teacher_classes if c not in names], n=1)
        entry = yaml.safe_dump({name: close[0] if close else None}, allow_unicode=True).strip()
        note = "the closest teacher name: check it" if close else "a teacher class name or label"
        lines.append(f"    {entry}  # {note}")
    return "\n".join(lines)


def _teacher_label(name: str, entries: Mapping[str, Any], teacher_classes: Sequence[str]) -> int:
    """The teacher label of student class `name`: its map entry, else the teacher class of that name."""
    value = entries.get(name, name)
    where = f"distill.class_map: {name}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: expected a teacher class name or label, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= len(teacher_classes):
            raise ConfigError(f"{where}: teacher label {value} is outside 1..{len(teacher_classes)} "
                              "(0 is the background)")
        return value
    matches = [label for label, teacher_name in enumerate(teacher_classes, start=1) if teacher_name == value]
    if len(matches) != 1:
        problem = "is not a teacher class" if not matches else "names several teacher classes; use a label"
        raise ConfigError(f"{where}: '{value}' {problem}")
    return matches[0]


def read_mapping(path: Path) -> dict[str, Any]:
    """A class map from a YAML file: student class name -> teacher class name or label."""
    return read_yaml_mapping(path, context="distill.class_map: ", missing="file not found",
                             expected="a mapping of student class -> teacher class")


def _first_few(names: Sequence[str], shown: int = 8) -> str:
    unique = list(dict.fromkeys(names))
    text = ", ".join(unique[:shown])
    return text + (f" and {len(unique) - shown} more" if len(unique) > shown else "")


def check_class_counts(n_teacher: int, n_student: int, class_map: ClassMap | None) -> None:
    """Raise ConfigError unless the heads' class counts (background included) fit the class map."""
    if class_map is None:
        if n_teacher != n_student:
            raise ConfigError(f"distill: teacher predicts {n_teacher} classes but student predicts "
                              f"{n_student} (background included); they must share one class list, "
                              "or distill.class_map must map one onto the other")
        return
    if (n_teacher, n_student) != (class_map.num_teacher_classes, class_map.num_student_classes):
        raise ConfigError(f"distill: the class map maps {class_map.num_student_classes} student outputs "
                          f"onto {class_map.num_teacher_classes} teacher outputs, but the student predicts "
                          f"{n_student} and the teacher {n_teacher} (background included)")
