"""Numbers of the reproduction report from run records: rows of mean ± std, and the claims verdicts.

Pure functions over the records written by `bench.reproduce`, so they are tested on hand-made records.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from tardistill.bench.plan import BASELINES, CHOICES, COMPONENTS

COMPONENT_LABELS = {"fpn_only": "+ Gaussian FPN only", "cls_only": "+ classification head only",
                    "reg_only": "+ regression head only", "full_no_decay": "full method, no decay",
                    "full": "full method, linear decay"}

TUNED_LABEL = "tar, choices tuned on val"
FULL_METHOD_LABEL = "full method (adaptive gates, teacher_better, beta 0.5, linear, student RoIs)"


@dataclass(frozen=True)
class Row:
    """One table row: AP and AP50 over the seeds that finished."""

    label: str
    ap: list[float]
    ap50: list[float]
    val_ap: list[float]  # best validation AP of each run: what choices are judged by (never test)

    @property
    def n(self) -> int:
        return len(self.ap)

    @property
    def mean_ap(self) -> float:
        return statistics.fmean(self.ap)

    @property
    def std_ap(self) -> float:
        return statistics.stdev(self.ap) if self.n > 1 else 0.0


def select(records: list[dict], **fields: Any) -> list[dict]:
    """The records whose fields equal all of `fields`."""
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def row(label: str, records: list[dict]) -> Row | None:
    """A row over `records` (one per seed), or None when none finished."""
    if not records:
        return None
    ordered = sorted(records, key=lambda r: r["seed"])
    return Row(label, [r["ap"] for r in ordered], [r["ap50"] for r in ordered],
               [max((ap for _, ap in r.get("val_curve") or []), default=float("nan")) for r in ordered])


def mean_std(values: list[float]) -> str:
    """'38.4 ± 0.5' in AP points; a single value has no ±; missing values (NaN) are left out."""
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def teacher_row(records: list[dict], detector: str) -> Row | None:
    return row("teacher", select(records, detector=detector, method="teacher"))


def student_row(records: list[dict], detector: str) -> Row | None:
    return row("student alone", select(records, detector=detector, method="none"))


def component_rows(records: list[dict]) -> list[Row]:
    """The paper's ablation on Faster R-CNN, teacher and student alone included."""
    rows = [teacher_row(records, "faster_rcnn"), student_row(records, "faster_rcnn")]
    rows += [row(COMPONENT_LABELS[name], select(records, detector="faster_rcnn", method="tar", variant=name,
                                                group="components")) for name in COMPONENTS]
    return [r for r in rows if r is not None]


def choice_rows(records: list[dict]) -> list[Row]:
    """Each open choice changed alone from the full method, against the full method on the same seed."""
    reference = row(FULL_METHOD_LABEL, select(records, detector="faster_rcnn", method="tar", variant="full", seed=0))
    rows = [reference] + [row(name, select(records, detector="faster_rcnn", method="tar", variant=name))
                          for name in CHOICES]
    return [r for r in rows if r is not None]


def baseline_rows(records: list[dict]) -> list[Row]:
    rows = [teacher_row(records, "faster_rcnn"), student_row(records, "faster_rcnn")]
    rows += [row(method, select(records, detector="faster_rcnn", method=method)) for method in BASELINES]
    rows.append(row("tar", select(records, detector="faster_rcnn", method="tar", variant="full")))
    rows.append(row(TUNED_LABEL, select(records, detector="faster_rcnn", method="tar", variant="tuned")))
    return [r for r in rows if r is not None]


def retinanet_rows(records: list[dict]) -> list[Row]:
    rows = [teacher_row(records, "retinanet"), student_row(records, "retinanet"),
            row("tar", select(records, detector="retinanet", method="tar", variant="full"))]
    return [r for r in rows if r is not None]


def _compare(better: Row | None, worse: Row | None) -> tuple[float, float] | None:
    """(mean AP difference, noise) in AP points; noise is the larger of the two rows' std."""
    if better is None or worse is None:
        return None
    return 100 * (better.mean_ap - worse.mean_ap), 100 * max(better.std_ap, worse.std_ap)


def verdict(difference: tuple[float, float] | None) -> str:
    """'held', 'did not hold' or 'within seed noise', with the numbers behind it.

    Noise is the larger seed std of the two rows; with one seed on both sides there is none to show.
    """
    if difference is None:
        return "not measured (runs missing)"
    delta, noise = difference
    basis = f"{delta:+.1f} AP" + (f", seed std {noise:.1f}" if noise > 0 else ", one seed")
    if noise > 0 and abs(delta) <= noise:
        return f"within seed noise ({basis})"
    return f"{'held' if delta > 0 else 'did not hold'} ({basis})"


def claims(records: list[dict]) -> list[tuple[str, str]]:
    """The paper's claims and what this benchmark says about each."""
    frcnn = dict(detector="faster_rcnn", method="tar")
    student, teacher = student_row(records, "faster_rcnn"), teacher_row(records, "faster_rcnn")
    full = row("full", select(records, variant="full", **frcnn))
    full_s0 = row("full", select(records, variant="full", seed=0, **frcnn))
    result = []
    reach = _compare(full, teacher)
    if reach is not None and student is not None:
        gap = teacher.mean_ap - student.mean_ap
        closed = 100 * (full.mean_ap - student.mean_ap) / gap if gap else float("nan")
        reach_text = verdict(reach) + f"; TAR closes {closed:.0f}% of the teacher-student gap"
    else:
        reach_text = verdict(None)
    result.append(("The TAR student reaches the teacher", reach_text))
    for name in ("fpn_only", "cls_only", "reg_only"):
        part = row(name, select(records, variant=name, **frcnn))
        result.append((f"{COMPONENT_LABELS[name]} adds AP over the student alone",
                       verdict(_compare(part, student))))
    no_decay = row("no decay", select(records, variant="full_no_decay", **frcnn))
    result.append(("Distillation decay helps (full with linear decay vs without)",
                   verdict(_compare(full, no_decay))))
    for name, label in (("cls_gate=all", "classification gate adaptive vs all RoIs"),
                        ("reg_gate=always", "regression gate teacher_better vs always")):
        ungated = row(name, select(records, variant=name, **frcnn))
        result.append((f"Adaptive gating beats ungated ({label})", verdict(_compare(full_s0, ungated))))
    baselines = []
    for method in BASELINES:
        baseline = row(method, select(records, detector="faster_rcnn", method=method))
        result.append((f"TAR beats {method}", verdict(_compare(full, baseline))))
        baselines += [baseline] if baseline else []
    tuned = row(TUNED_LABEL, select(records, variant="tuned", **frcnn))
    if tuned is not None and baselines:
        best = max(baselines, key=lambda r: r.mean_ap)
        result.append((f"TAR with its open choices tuned on validation beats the best baseline ({best.label})",
                       verdict(_compare(tuned, best))))
    retina_tar = row("tar", select(records, detector="retinanet", method="tar", variant="full"))
    result.append(("On RetinaNet, the TAR student beats the student alone (paper: +2.3 AP)",
                   verdict(_compare(retina_tar, student_row(records, "retinanet")))))
    return result
