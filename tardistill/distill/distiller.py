"""`Distiller`: a frozen teacher, a trained student and the TAR loss terms (METHOD.md)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from tardistill.distill.adapters import build_fpn_adapters
from tardistill.distill.decay import check_decay, decay_weight
from tardistill.distill.losses import (
    check_gate, cls_distill_loss, cls_gate, fpn_imitation_loss, reg_distill_loss, reg_gate,
    selected_fraction)
from tardistill.distill.masks import gaussian_masks
from tardistill.distill.one_stage import (
    OneStageOutputs, anchor_cls_loss, anchor_reg_loss, check_one_stage_pair, one_stage_forward)
from tardistill.distill.two_stage import (
    SHARINGS, TwoStageOutputs, check_two_stage_pair, class_deltas, two_stage_forward)
from tardistill.errors import ConfigError

# The detection losses each kind's training forward returns, once prefixed.
DET_KEYS = {
    "faster_rcnn": ("det/loss_classifier", "det/loss_box_reg", "det/loss_objectness",
                    "det/loss_rpn_box_reg"),
    "retinanet": ("det/classification", "det/bbox_regression"),
}
KD_KEYS = ("kd/fpn", "kd/cls", "kd/reg")
SUPPORTED_KINDS = tuple(DET_KEYS)


def detector_kind(model: nn.Module) -> str:
    """faster_rcnn | retinanet | the class name, for error messages."""
    if isinstance(model, FasterRCNN):
        return "faster_rcnn"
    if isinstance(model, RetinaNet):
        return "retinanet"
    return type(model).__name__


class Distiller(nn.Module):
    """Trains `student` with TAR from a frozen `teacher`; `forward` returns the flat loss dict.

    Both are Faster R-CNNs (RoIs shared, METHOD.md sections 1-4) or both RetinaNets (anchors
    shared, section 6); the kind decides the forward and the head terms, everything else is common.
    A KD term whose weight is 0 is not computed, and the teacher parts it alone needs do not run.
    The FPN adapters live here, never inside the student, so `distiller.student` stays a plain
    torchvision detector.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, fpn_weight: float = 1.0,
                 cls_weight: float = 1.0, reg_weight: float = 1.0, beta: float = 0.5,
                 truncate: bool = True, tau: float = 1.0, cls_gate: str = "adaptive",
                 reg_gate: str = "teacher_better", sharing: str = "student", decay: str = "linear",
                 decay_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.kind = _check_pair(teacher, student)
        _check_options({"fpn_weight": fpn_weight, "cls_weight": cls_weight, "reg_weight": reg_weight,
                        "beta": beta, "tau": tau}, cls_gate=cls_gate, reg_gate=reg_gate,
                       sharing=sharing, decay=decay, decay_kwargs=decay_kwargs or {})
        if self.kind == "retinanet" and sharing != "student":
            raise ConfigError(f"distill.sharing: '{sharing}' shares proposals, and RetinaNet has none; "
                              "use student (both models then use the student's anchors)")
        self.teacher, self.student = teacher, student
        self.teacher.requires_grad_(False)
        self.fpn_weight, self.cls_weight, self.reg_weight = fpn_weight, cls_weight, reg_weight
        self.beta, self.truncate, self.tau = beta, truncate, tau
        self.cls_gate, self.reg_gate, self.sharing = cls_gate, reg_gate, sharing
        self.decay, self.decay_kwargs = decay, dict(decay_kwargs or {})
        self.adapters, self.fpn_strides = None, {}
        if fpn_weight > 0:
            self.adapters, self.fpn_strides = build_fpn_adapters(teacher.backbone, student.backbone)
        self.train(student.training)

    def train(self, mode: bool = True) -> Distiller:
        """Set the student's and adapters' mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: the student's trainable parameters and the adapters."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        if self.adapters is not None:
            params += list(self.adapters.parameters())
        return params

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses (det/*, kd/*) and detached statistics (stat/*) for one training batch."""
        if not self.training:
            raise RuntimeError("Distiller.forward computes training losses; call distiller.train(), "
                               "or use distiller.student for predictions")
        needs = {"teacher_features": self.fpn_weight > 0,
                 "teacher_head": self.cls_weight > 0 or self.reg_weight > 0}
        if self.kind == "retinanet":
            out = one_stage_forward(self.teacher, self.student, images, targets, **needs)
            cls_term, reg_term = self._anchor_cls_loss, self._anchor_reg_loss
        else:
            out = two_stage_forward(self.teacher, self.student, images, targets, sharing=self.sharing,
                                    **needs)
            cls_term, reg_term = self._roi_cls_loss, self._roi_reg_loss
        losses = {f"det/{name}": value for name, value in out.det_losses.items()}
        if self.fpn_weight > 0:
            losses["kd/fpn"] = self._fpn_loss(out)
        if self.cls_weight > 0:
            losses["kd/cls"], losses["stat/cls_gate_rate"] = cls_term(out)
        if self.reg_weight > 0:
            losses["kd/reg"], losses["stat/reg_gate_rate"] = reg_term(out)
        return losses

    def loss_weights(self, step: int, total_steps: int) -> dict[str, float]:
        """Weight of every loss key at `step` (kd/x -> w(t) * lambda_x), plus stat/decay_w = w(t)."""
        w = decay_weight(self.decay, step, total_steps, **self.decay_kwargs)
        weights = dict.fromkeys(DET_KEYS[self.kind], 1.0)
        weights.update({"kd/fpn": w * self.fpn_weight, "kd/cls": w * self.cls_weight,
                        "kd/reg": w * self.reg_weight, "stat/decay_w": w})
        return weights

    def _fpn_loss(self, out: TwoStageOutputs | OneStageOutputs) -> Tensor:
        adapted = self.adapters(out.student_features)
        total = None
        for name, student_feat in adapted.items():
            teacher_feat = out.teacher_features[name]
            if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
                raise ConfigError(f"distill: FPN level {name} is {tuple(teacher_feat.shape[-2:])} in "
                                  f"the teacher but {tuple(student_feat.shape[-2:])} in the student; "
                                  "set distill.fpn_weight=0 to distill only the detection heads")
            height, width = teacher_feat.shape[-2:]
            mask = gaussian_masks(out.gt_boxes, height=height, width=width,
                                  stride=self.fpn_strides[name], beta=self.beta, truncate=self.truncate)
            level_loss = fpn_imitation_loss(student_feat, teacher_feat, mask)
            total = level_loss if total is None else total + level_loss
        return total

    def _roi_cls_loss(self, out: TwoStageOutputs) -> tuple[Tensor, Tensor]:
        gate = cls_gate(out.student_logits, out.teacher_logits, out.labels, mode=self.cls_gate)
        loss = cls_distill_loss(out.student_logits[gate], out.teacher_logits[gate], tau=self.tau)
        return loss, selected_fraction(gate[out.labels > 0])

    def _roi_reg_loss(self, out: TwoStageOutputs) -> tuple[Tensor, Tensor]:
        positive = out.labels > 0
        labels, proposals = out.labels[positive], out.proposals[positive]
        student_deltas = class_deltas(out.student_deltas[positive], labels)
        teacher_deltas = class_deltas(out.teacher_deltas[positive], labels)
        with torch.no_grad():
            # Each detector decodes its own deltas (their coder weights were checked to match).
            student_boxes = self.student.roi_heads.box_coder.decode(
                student_deltas.detach(), [proposals]).reshape(-1, 4)
            teacher_boxes = self.teacher.roi_heads.box_coder.decode(
                teacher_deltas, [proposals]).reshape(-1, 4)
        selected = reg_gate(student_boxes, teacher_boxes, proposals, out.matched_gt_boxes[positive],
                            mode=self.reg_gate)
        loss = reg_distill_loss(student_deltas, teacher_deltas, selected, num_sampled=out.labels.numel())
        return loss, selected_fraction(selected)

    def _anchor_cls_loss(self, out: OneStageOutputs) -> tuple[Tensor, Tensor]:
        return anchor_cls_loss(out, mode=self.cls_gate, tau=self.tau)

    def _anchor_reg_loss(self, out: OneStageOutputs) -> tuple[Tensor, Tensor]:
        return anchor_reg_loss(out, box_coder=self.student.box_coder, mode=self.reg_gate)


def _check_options(numbers: dict[str, float], *, cls_gate: str, reg_gate: str, sharing: str,
                   decay: str, decay_kwargs: dict[str, Any]) -> None:
    for name, value in numbers.items():
        # weights may be 0 (term off); beta and tau scale a division, so they must be positive
        if value < 0 or (value == 0 and name in ("beta", "tau")):
            raise ConfigError(f"distill.{name} must be {'>= 0' if 'weight' in name else '> 0'}, "
                              f"got {value}")
    check_gate("cls_gate", cls_gate)
    check_gate("reg_gate", reg_gate)
    check_decay(decay)
    if sharing not in SHARINGS:
        raise ConfigError(f"distill.sharing: unknown value '{sharing}' (valid: {', '.join(SHARINGS)})")
    try:  # fail now, not at the first logging step, on a misspelt decay argument
        decay_weight(decay, 0, 1, **decay_kwargs)
    except TypeError as err:
        raise ConfigError(f"distill.decay_kwargs: {err} (valid: step_fraction, gamma)") from err


def _check_pair(teacher: nn.Module, student: nn.Module) -> str:
    """The pair's detector kind; ConfigError unless both are one supported kind and compatible."""
    kinds = detector_kind(teacher), detector_kind(student)
    if kinds[0] != kinds[1]:
        raise ConfigError(f"distill: teacher is {kinds[0]} but student is {kinds[1]}; both must be "
                          "the same kind of detector")
    if kinds[0] not in SUPPORTED_KINDS:
        raise ConfigError(f"distill: distilling {kinds[0]} is not supported "
                          f"(supported: {', '.join(SUPPORTED_KINDS)})")
    if kinds[0] == "retinanet":
        check_one_stage_pair(teacher, student)
    else:
        check_two_stage_pair(teacher, student)
    return kinds[0]
