"""`distill_student`: load the teacher, build the student, distill it by one method, save the student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tardistill.config import Config, as_config
from tardistill.distill.pair import build_distiller, build_pair, check_distill_config
from tardistill.engine.runs import read_splits, run_and_test, run_training
from tardistill.errors import TardistillError
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


def check_distill_inputs(config: Config) -> None:
    """The method, its options, the teacher file and the data, checked before a run is moved aside."""
    check_distill_config(config)
    teacher = config.distill.teacher
    if config.distill.method != "none" and not Path(teacher).is_file():
        raise TardistillError(f"{teacher}: checkpoint not found (distill.teacher)")
    read_splits(config)


def train_student(config: Config | str | Path, out: str | Path, *, resume: bool = False,
                  overwrite: bool = False) -> dict[str, Any]:
    """Distill the student of `config` (a Config or a YAML path) into the run folder `out`, as
    `tardistill distill` does; returns result.json's content (test_metrics, checkpoint, ...).

    (Not called `distill`: that is the name of the package tardistill.distill.)
    resume: continue the saved state in `out`. overwrite: move a run already in `out` aside first.
    """
    return run_and_test(as_config(config), Path(out), distill_student, resume=resume, overwrite=overwrite,
                        check=check_distill_inputs)
