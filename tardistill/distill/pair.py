"""From a config to what distillation trains: the configured method, the teacher and student pair,
and the Distiller. `tardistill distill`, `profile` and `bench distill-cost` all build them here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tardistill.config import Config, DistillConfig
from tardistill.distill.class_map import ClassMap, resolve_class_map
from tardistill.distill.distiller import Distiller, detector_kind
from tardistill.distill.methods.base import DistillMethod
from tardistill.distill.methods.registry import build_method, method_class, option_names
from tardistill.distill.methods.tar import TAR
from tardistill.distill.teacher import load_teacher
from tardistill.engine.setup import detector_from_config
from tardistill.errors import ConfigError
from tardistill.models.weights import load_detector_weights

# The flat distill.* keys that are TAR's options (every field of TAR has one).
TAR_FLAT_KEYS = tuple(option_names(TAR))


@dataclass
class DistillPair:
    """A distillation config's models: the teacher is None for method none."""

    student: nn.Module
    student_classes: list[str]
    teacher: nn.Module | None = None
    teacher_classes: list[str] | None = None
    class_map: ClassMap | None = None


def idle_tar_keys(terms: DistillConfig) -> tuple[str, ...]:
    """TAR's flat keys (fpn_weight, ...) when another method (or none) distills, else nothing.

    There they must sit at their defaults (method_from_config), so a run's saved config leaves them
    out: written at the defaults of its day, a later change of a TAR default would make the saved
    file fail to rerun.
    """
    return () if terms.method == "tar" else TAR_FLAT_KEYS


def method_from_config(terms: DistillConfig, kind: str) -> DistillMethod:
    """The configured method: distill.method_options over its defaults, and for TAR the flat keys.

    The flat keys (fpn_weight, beta, ...) are TAR's. Set away from its default with another method,
    one would be silently ignored, so it is a ConfigError that points to distill.method_options; so
    is a TAR option set both flat and in method_options.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(DistillConfig)}
    changed = [key for key in TAR_FLAT_KEYS if getattr(terms, key) != defaults[key]]
    if terms.method == "tar":
        twice = [key for key in changed if key in terms.method_options]
        if twice:
            raise ConfigError(f"distill.{twice[0]} and distill.method_options.{twice[0]} both set TAR's "
                              f"{twice[0]}; keep one")
        flat = {key: getattr(terms, key) for key in TAR_FLAT_KEYS}
        return build_method("tar", {**flat, **terms.method_options}, kind=kind)
    if changed:
        valid = option_names(method_class(terms.method, kind)) or ["none"]
        raise ConfigError(f"distill.{changed[0]} is an option of TAR, not of method {terms.method}; set "
                          f"{terms.method}'s options in distill.method_options (valid: {', '.join(valid)})")
    return build_method(terms.method, terms.method_options, kind=kind)


def check_distill_config(config: Config) -> None:
    """ConfigError for a method, option or missing teacher that would fail later, before anything loads."""
    method_from_config(config.distill, config.model.kind)
    if config.distill.method != "none" and not config.distill.teacher:
        raise ConfigError("distill.teacher: name the teacher checkpoint (.safetensors) to distill from")


def build_pair(config: Config, student_classes: list[str] | None = None) -> DistillPair:
    """The student of `config.model` and the teacher of `config.distill`, checked to fit each other.

    The method and its options are checked first, so a typo fails before anything loads. The student
    is built before the teacher loads: under one seed it starts from the same weights as always.

    Args:
        student_classes: the student's label set (its training data's classes). None, for a
            measurement without data at hand: the student takes the teacher's classes (only its last
            layer's size could differ) and no class map is resolved.
    """
    terms = config.distill
    check_distill_config(config)
    if student_classes is None and terms.method == "none":
        raise ConfigError("distill: without a teacher the student's classes come from the data")
    student = _student(config, student_classes) if student_classes is not None else None
    pair = DistillPair(student=student, student_classes=student_classes)
    if terms.method != "none":
        pair.teacher, pair.teacher_classes = load_teacher(terms, config.model)
    if student is None:
        pair.student_classes = list(pair.teacher_classes)
        pair.student = _student(config, pair.student_classes)
    elif pair.teacher is not None:
        # Checked before training starts: a teacher trained on other classes guides this student
        # only through a class map.
        pair.class_map = resolve_class_map(terms.class_map, pair.teacher_classes, student_classes,
                                           teacher=terms.teacher)
    return pair


def _student(config: Config, classes: list[str]) -> nn.Module:
    student = detector_from_config(config.model, len(classes))
    if config.distill.student_checkpoint:
        load_detector_weights(student, Path(config.distill.student_checkpoint))
    return student


def build_distiller(pair: DistillPair, terms: DistillConfig) -> Distiller:
    """The Distiller of a pair with a teacher, with the config's method, decay and sharing."""
    if pair.teacher is None:
        raise ConfigError("distill: method none has no teacher to distill from")
    method = method_from_config(terms, detector_kind(pair.student))
    return Distiller(pair.teacher, pair.student, method=method, sharing=terms.sharing, decay=terms.decay,
                     decay_kwargs={"step_fraction": terms.decay_step_fraction, "gamma": terms.decay_gamma},
                     class_map=pair.class_map)

