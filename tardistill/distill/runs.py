"""`distill_student`: load the teacher, build the student, distill it by one method, save the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tardistill.config import Config, DistillConfig
from tardistill.distill.distiller import Distiller
from tardistill.distill.methods import check_method
from tardistill.engine.runs import check_same_classes, run_training
from tardistill.engine.setup import dataset_for, detector_from_config, load_detector, seed_everything
from tardistill.engine.trainer import PrefixedLosses
from tardistill.errors import ConfigError
from tardistill.models.weights import load_detector_weights


def build_distiller(teacher, student, terms: DistillConfig) -> Distiller:
    """A Distiller with the config's method and terms."""
    return Distiller(teacher, student, method=terms.method, fpn_weight=terms.fpn_weight,
                     cls_weight=terms.cls_weight, reg_weight=terms.reg_weight, beta=terms.beta,
                     truncate=terms.truncate, tau=terms.tau, cls_gate=terms.cls_gate,
                     reg_gate=terms.reg_gate, sharing=terms.sharing, decay=terms.decay,
                     decay_kwargs={"step_fraction": terms.decay_step_fraction, "gamma": terms.decay_gamma})


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
        teacher, teacher_meta = load_detector(terms.teacher)
        # Checked before training starts: a teacher trained on other classes cannot guide this student.
        check_same_classes(teacher_meta["classes"], train_set.classes, Path(terms.teacher))
        model = build_distiller(teacher, student, terms)
    return run_training(config, model, student, train_set, out_dir, resume=resume,
                        meta={"role": "student", "teacher": terms.teacher})
