"""Distilling onto another label set: the teacher's class outputs gathered onto the student's classes.

`distill.class_map` maps each student class name to a teacher class, by name or by label (the
teacher's output index: 1..K, 0 is the background; for torchvision's COCO weights the label is the
COCO category id). Student classes it leaves out are matched to the teacher class of the same name.
Before the head terms, the teacher's outputs are rearranged into the student's columns:
- softmax logits (Faster R-CNN): the mapped columns; the background column absorbs every teacher
  class the student lacks (log-sum-exp), so at tau = 1 the gathered softmax is exactly the teacher's
  probability of each student class and of "none of them";
- sigmoid logits (RetinaNet): the mapped columns; each class is scored on its own, so the
  others are simply left out;
- class-specific box deltas (Faster R-CNN): the mapped classes' four deltas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
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


def resolve_class_map(mapping: Mapping[str, Any] | str | None, teacher_classes: Sequence[str],
                      student_classes: Sequence[str], *, teacher: str) -> ClassMap | None:
    """The ClassMap for `distill.class_map`, or None where teacher and student share one class list.

    Args:
        mapping: student class name -> teacher class name or label, or the path of a YAML file
            holding that mapping; None requires identical class lists.
        teacher_classes, student_classes: the class names without the background.
        teacher: the teacher's file, for error messages.
    """
    if mapping is None:
        if list(teacher_classes) != list(student_classes):
            raise ConfigError(f"distill: the teacher ({teacher}) and the student have different classes "
                              f"({describe_difference(teacher_classes, student_classes)}); set "
                              "distill.class_map to map the student's classes onto the teacher's "
                              "(docs/PRETRAINED.md)")
        return None
    if isinstance(mapping, str):
        mapping = read_mapping(Path(mapping))
    entries = {str(name): value for name, value in mapping.items()}
    unknown = sorted(set(entries) - set(student_classes))
    if unknown:
        raise ConfigError(f"distill.class_map: {', '.join(unknown)} not among the student's classes "
                          f"({', '.join(student_classes)})")
    labels = [_teacher_label(name, entries, teacher_classes) for name in student_classes]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        names = [f"{teacher_classes[label - 1]} (label {label})" for label in repeated]
        raise ConfigError(f"distill.class_map: several student classes map to teacher class "
                          f"{', '.join(names)}; each needs its own teacher class")
    return ClassMap((0, *labels), len(teacher_classes) + 1)


def _teacher_label(name: str, entries: Mapping[str, Any], teacher_classes: Sequence[str]) -> int:
    """The teacher label of student class `name`: its map entry, else the teacher class of that name."""
    value = entries.get(name, name)
    where = f"distill.class_map: {name}" if name in entries else f"distill.class_map: student class {name}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: expected a teacher class name or label, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= len(teacher_classes):
            raise ConfigError(f"{where}: teacher label {value} is outside 1..{len(teacher_classes)} "
                              "(0 is the background)")
        return value
    matches = [label for label, teacher_name in enumerate(teacher_classes, start=1) if teacher_name == value]
    if len(matches) != 1:
        problem = "is not a teacher class" if not matches else "names several teacher classes"
        advice = "map it to a teacher class name or label" if name not in entries else "use a label"
        raise ConfigError(f"{where}: '{value}' {problem}; {advice}")
    return matches[0]


def read_mapping(path: Path) -> dict[str, Any]:
    """A class map from a YAML file: student class name -> teacher class name or label."""
    return read_yaml_mapping(path, context="distill.class_map: ", missing="file not found",
                             expected="a mapping of student class -> teacher class")


def describe_difference(teacher_classes: Sequence[str], student_classes: Sequence[str]) -> str:
    """What differs between two class lists, in a few words."""
    only_teacher = [c for c in teacher_classes if c not in student_classes]
    only_student = [c for c in student_classes if c not in teacher_classes]
    if not only_teacher and not only_student:
        if len(teacher_classes) != len(student_classes):
            return "the same names, with repeats in one list"
        return f"the same names in another order: teacher {list(teacher_classes)}, student {list(student_classes)}"
    parts = [f"{len(teacher_classes)} teacher and {len(student_classes)} student classes"]
    if only_student:
        parts.append(f"only the student has {_first_few(only_student)}")
    if only_teacher:
        parts.append(f"only the teacher has {_first_few(only_teacher)}")
    return "; ".join(parts)


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
