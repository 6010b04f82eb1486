"""Chen et al., Learning efficient object detection models with knowledge distillation (NeurIPS 2017):
a hint, hard + soft RoI classification and a teacher-bounded regression (METHOD.md, "Baselines").

Faster R-CNN only: its head terms are softmax classification and per-class deltas of sampled RoIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tardistill.distill.losses import selected_fraction
from tardistill.distill.methods.base import DistillMethod, FpnLevel, check_ranges
from tardistill.distill.methods.fitnet import fitnet_loss
from tardistill.distill.two_stage import TwoStageOutputs, class_deltas

# The paper's defaults: mu mixes hard and soft CE, nu weighs the teacher-bounded term, m is its
# margin, the background class weighs 1.5 in the soft CE, and gamma = 0.5 weighs the hint.
CHEN_MU, CHEN_NU, CHEN_MARGIN = 0.5, 0.5, 0.0
CHEN_BACKGROUND_WEIGHT, CHEN_HINT_WEIGHT = 1.5, 0.5


def chen_hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Chen et al.'s hint: L2 between adapted student and teacher FPN features; see `fitnet_loss`."""
    return fitnet_loss(student_feat, teacher_feat)


def chen_cls_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *,
                  mu: float = CHEN_MU, background_weight: float = CHEN_BACKGROUND_WEIGHT,
                  tau: float = 1.0) -> Tensor:
    """Chen et al.'s RoI classification loss: mu * CE(hard) + (1 - mu) * weighted soft CE.

    The soft CE is -sum_c w_c p_T,c log p_S,c with p = softmax(z / tau), w_0 = background_weight and
    w_c = 1 otherwise; both parts are averaged over all given RoIs. As in the paper, the class weight
    is on the soft term only, and there is no tau^2 factor. The hard part is torchvision's own
    classifier loss, so this term replaces det/loss_classifier rather than adding to it.

    With background_weight != 1 the soft CE is not minimal at p_S = p_T but at p_S proportional to
    w * p_T: the student is pushed towards background more than the teacher is.

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1], background at index 0.
        labels: Tensor[R] int64, 0 = background.

    Returns:
        scalar Tensor; 0 (attached to the student's graph) when R == 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    logits = student_logits.float()
    hard = F.cross_entropy(logits, labels)
    p_teacher = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    class_weight = torch.ones_like(p_teacher[0])
    class_weight[0] = background_weight
    log_p_student = F.log_softmax(logits / tau, dim=1)
    soft = -(class_weight * p_teacher * log_p_student).sum(dim=1).mean()
    return mu * hard + (1 - mu) * soft


def chen_teacher_bounded(student_deltas: Tensor, teacher_deltas: Tensor, target_deltas: Tensor, *,
                         margin: float = CHEN_MARGIN) -> Tensor:
    """Where Chen's bounded term is active: ||S - y||^2 + m > ||T - y||^2 (the student is not yet
    better than the teacher by the margin).

    Args:
        student_deltas, teacher_deltas, target_deltas: Tensor[P, 4], deltas for the GT class.

    Returns:
        Tensor[P] bool.
    """
    with torch.no_grad():
        student_error = (student_deltas.float() - target_deltas.float()).pow(2).sum(dim=1)
        teacher_error = (teacher_deltas.float() - target_deltas.float()).pow(2).sum(dim=1)
        return student_error + margin > teacher_error


def chen_bounded_reg_loss(student_deltas: Tensor, teacher_deltas: Tensor, target_deltas: Tensor, *,
                          margin: float = CHEN_MARGIN) -> Tensor:
    """Chen et al.'s teacher-bounded L2 regression term, averaged over the given (positive) RoIs.

    Per RoI: ||S - y||^2 where `chen_teacher_bounded` holds, else 0. The teacher only sets the bound;
    the student is pulled towards the GT target, never towards the teacher's deltas. Add it, times
    nu, to the usual smooth-L1 box loss.

    Args:
        student_deltas, teacher_deltas, target_deltas: Tensor[P, 4], the positive RoIs' deltas for
            their GT class (`two_stage.class_deltas`) and their encoded regression targets.

    Returns:
        scalar Tensor; 0 (attached) when P == 0.
    """
    active = chen_teacher_bounded(student_deltas, teacher_deltas, target_deltas, margin=margin)
    student_error = (student_deltas.float() - target_deltas.detach().float()).pow(2).sum(dim=1)
    return (student_error * active).sum() / max(student_deltas.shape[0], 1)


@dataclass(frozen=True)
class Chen2017(DistillMethod):
    """The paper's defaults. fpn_weight: gamma, the hint's weight. cls_weight: the classification
    term's (it holds mu * the hard CE itself, so torchvision's classifier loss weighs 0). reg_weight:
    nu, the bounded term's. mu, background_weight, tau, margin: see `chen_cls_loss` and
    `chen_bounded_reg_loss`."""

    name = "chen2017"
    kinds = ("faster_rcnn",)
    feature_terms = ("kd/fpn",)
    head_terms = ("kd/cls", "kd/reg")

    fpn_weight: float = CHEN_HINT_WEIGHT
    cls_weight: float = 1.0
    reg_weight: float = CHEN_NU
    mu: float = CHEN_MU
    background_weight: float = CHEN_BACKGROUND_WEIGHT
    tau: float = 1.0
    margin: float = CHEN_MARGIN

    def __post_init__(self) -> None:
        check_ranges(self.name, {"fpn_weight": self.fpn_weight, "cls_weight": self.cls_weight,
                                 "reg_weight": self.reg_weight, "mu": self.mu,
                                 "background_weight": self.background_weight, "tau": self.tau,
                                 "margin": self.margin}, positive=("tau",))

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"det/loss_classifier": 0.0, "kd/cls": self.cls_weight, "kd/reg": self.reg_weight,
                "kd/fpn": self.fpn_weight}

    def terms(self, out: TwoStageOutputs, levels: list[FpnLevel], modules: nn.Module | None
              ) -> dict[str, Tensor]:
        """The hint summed over levels, the classification term, the bounded term and its active rate."""
        losses = {}
        if levels:  # fpn_weight > 0
            losses["kd/fpn"] = sum(chen_hint_loss(level.student, level.teacher) for level in levels)
        losses["kd/cls"] = chen_cls_loss(out.student_logits, out.teacher_logits, out.labels, mu=self.mu,
                                         background_weight=self.background_weight, tau=self.tau)
        positive = out.labels > 0
        labels = out.labels[positive]
        student_deltas = class_deltas(out.student_deltas[positive], labels)
        teacher_deltas = class_deltas(out.teacher_deltas[positive], labels)
        targets = out.regression_targets[positive]
        losses["kd/reg"] = chen_bounded_reg_loss(student_deltas, teacher_deltas, targets, margin=self.margin)
        active = chen_teacher_bounded(student_deltas, teacher_deltas, targets, margin=self.margin)
        losses["stat/reg_gate_rate"] = selected_fraction(active)
        return losses
