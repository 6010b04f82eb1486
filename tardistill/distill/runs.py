"""`distill_student`: load the teacher, build the student, distill it by one method, save the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tardistill.config import Config, DistillConfig
from tardistill.distill.class_map import ClassMap, resolve_class_map
from tardistill.distill.distiller import Distiller
from tardistill.distill.methods import check_method
from tardistill.distill.teacher import load_teacher
from tardistill.engine.runs import run_training
from tardistill.engine.setup import dataset_for, detector_from_config, seed_everything
from tardistill.engine.trainer import PrefixedLosses
from tardistill.errors import ConfigError
from tardistill.models.weights import load_detector_weights


def build_distiller(teacher, student, terms: DistillConfig, *, class_map: ClassMap | None = None
                    ) -> Distiller:
    """A Distiller with the config's method and terms."""
    return Distiller(teacher, student, method=terms.method, fpn_weight=terms.fpn_weight,
                     cls_weight=terms.cls_weight, reg_weight=terms.reg_weight, beta=terms.beta,
                     truncate=terms.truncate, fpn_norm=terms.fpn_norm, tau=terms.tau,
                     cls_gate=terms.cls_gate, reg_gate=terms.reg_gate, sharing=terms.sharing, decay=terms.decay,
                     decay_kwargs={"step_fraction": terms.decay_step_fraction, "gamma": terms.decay_gamma},
                     class_map=class_map)


def distill_student(config: Config, out_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train the student of `config.model` from the teacher checkpoint `config.distill.teacher`.

    distill.method none trains the student alone, with no teacher.
    """
    terms = config.distill
    check_method(terms.method, config.model.kind)
    if terms.method != "none" and not terms.teacher:
        raise ConfigError("distill.teacher: name the teacher checkpoint (.safetensors) to distill from")
    seed_everything(config.seed)
    train_set = dataset_for(config.data, config.data.train_split, train=True)
    student = detector_from_config(config.model, len(train_set.classes))
    if terms.student_checkpoint:
        load_detector_weights(student, Path(terms.student_checkpoint))
    model = PrefixedLosses(student)
    if terms.method != "none":
        teacher, teacher_classes = load_teacher(terms, config.model)
        # Checked before training starts: a teacher trained on other classes guides this student
        # only through a class map.
        class_map = resolve_class_map(terms.class_map, teacher_classes, train_set.classes,
                                      teacher=terms.teacher)
        model = build_distiller(teacher, student, terms, class_map=class_map)
    return run_training(config, model, student, train_set, out_dir, resume=resume,
                        meta={"role": "student", "teacher": terms.teacher})
