"""`distill_student`: load the teacher, build the student, distill it by one method, save the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tardistill.config import Config
from tardistill.distill.pair import build_distiller, build_pair, check_distill_config
from tardistill.engine.runs import run_training
from tardistill.engine.setup import dataset_for, seed_everything
from tardistill.engine.trainer import PrefixedLosses


def distill_student(config: Config, out_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train the student of `config.model` from the teacher checkpoint `config.distill.teacher`.

    distill.method none trains the student alone, with no teacher.
    """
    terms = config.distill
    check_distill_config(config)  # a misspelt method or option fails before anything loads
    seed_everything(config.seed)
    train_set = dataset_for(config.data, config.data.train_split, train=True)
    pair = build_pair(config, list(train_set.classes))
    model = PrefixedLosses(pair.student) if pair.teacher is None else build_distiller(pair, terms)
    return run_training(config, model, pair.student, train_set, out_dir, resume=resume,
                        meta={"role": "student", "teacher": terms.teacher})
