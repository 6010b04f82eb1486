"""`Distiller`: a frozen teacher, a trained student and the loss terms of one distillation method."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from tardistill.distill.adapters import build_fpn_adapters
from tardistill.distill.class_map import ClassMap
from tardistill.distill.decay import check_decay, decay_weight
from tardistill.distill.losses import check_fpn_norm, check_gate
from tardistill.distill.methods import (
    AUTO_DECAY, check_method, forward_needs, fpn_remedy, method_options, method_weights, resolve_decay)
from tardistill.distill.one_stage import check_one_stage_pair, one_stage_forward
from tardistill.distill.two_stage import SHARINGS, check_two_stage_pair, two_stage_forward
from tardistill.errors import ConfigError

# The detection losses each kind's training forward returns, once prefixed.
DET_KEYS = {
    "faster_rcnn": ("det/loss_classifier", "det/loss_box_reg", "det/loss_objectness",
                    "det/loss_rpn_box_reg"),
    "retinanet": ("det/classification", "det/bbox_regression"),
}
SUPPORTED_KINDS = tuple(DET_KEYS)


def detector_kind(model: nn.Module) -> str:
    """faster_rcnn | retinanet | the class name, for error messages."""
    if isinstance(model, FasterRCNN):
        return "faster_rcnn"
    if isinstance(model, RetinaNet):
        return "retinanet"
    return type(model).__name__


class Distiller(nn.Module):
    """Trains `student` from a frozen `teacher` with one method; `forward` returns the flat loss dict.

    Both are Faster R-CNNs (RoIs shared, METHOD.md sections 1-4) or both RetinaNets (anchors
    shared, section 6); the kind decides the forward, the method (`methods.METHODS`: TAR or a
    baseline) the KD terms, and everything else is common. A KD term whose weight is 0 is not
    computed, and the teacher parts it alone needs do not run. The FPN adapters and any modules of
    the method (FGD's context blocks) live here, never inside the student, so `distiller.student`
    stays a plain torchvision detector.

    The weight, gate, mask and temperature arguments are TAR's; a baseline uses its paper's values
    (`baseline_losses.BASELINE_DEFAULTS`). `decay="auto"` is linear for TAR and the paper's
    schedule (constant) for a baseline; any other decay applies to every method. `class_map`
    (distill/class_map.py) lets a teacher trained on another label set guide the student: the
    teacher's class outputs are gathered onto the student's classes before the head terms.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, method: str = "tar",
                 fpn_weight: float = 1.0, cls_weight: float = 1.0, reg_weight: float = 1.0,
                 beta: float = 0.5, truncate: bool = True, fpn_norm: str = "standard", tau: float = 1.0,
                 cls_gate: str = "adaptive",
                 reg_gate: str = "teacher_better", sharing: str = "student", decay: str = AUTO_DECAY,
                 decay_kwargs: dict[str, Any] | None = None, class_map: ClassMap | None = None):
        super().__init__()
        self.kind = _check_pair(teacher, student, class_map)
        self.class_map = class_map
        self.method, self.spec = method, check_method(method, self.kind)
        decay = resolve_decay(method, decay)
        _check_options({"fpn_weight": fpn_weight, "cls_weight": cls_weight, "reg_weight": reg_weight,
                        "beta": beta, "tau": tau}, cls_gate=cls_gate, reg_gate=reg_gate, fpn_norm=fpn_norm,
                       sharing=sharing, decay=decay, decay_kwargs=decay_kwargs or {})
        if self.kind == "retinanet" and sharing != "student":
            raise ConfigError(f"distill.sharing: '{sharing}' shares proposals, and RetinaNet has none; "
                              "use student (both models then use the student's anchors)")
        self.teacher, self.student = teacher, student
        self.teacher.requires_grad_(False)
        self.weights = method_weights(method, {"kd/fpn": fpn_weight, "kd/cls": cls_weight,
                                               "kd/reg": reg_weight})
        self.options = method_options(method)
        self.beta, self.truncate, self.tau, self.fpn_norm = beta, truncate, tau, fpn_norm
        self.cls_gate, self.reg_gate, self.sharing = cls_gate, reg_gate, sharing
        self.decay, self.decay_kwargs = decay, dict(decay_kwargs or {})
        self.needs = forward_needs(self.weights, self.spec)
        self.adapters, self.fpn_strides, self.method_modules = None, {}, None
        if self.needs["teacher_features"]:
            self.adapters, self.fpn_strides = build_fpn_adapters(teacher.backbone, student.backbone,
                                                                 remedy=fpn_remedy(method))
            if self.spec.modules is not None:
                self.method_modules = self.spec.modules(self.adapters)
        self.train(student.training)

    def train(self, mode: bool = True) -> Distiller:
        """Set the student's and adapters' mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: the student's trainable parameters, the adapters and the
        method's own modules."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        for module in (self.adapters, self.method_modules):
            if module is not None:
                params += list(module.parameters())
        return params

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses (det/*, kd/*) and detached statistics (stat/*) for one training batch."""
        if not self.training:
            raise RuntimeError("Distiller.forward computes training losses; call distiller.train(), "
                               "or use distiller.student for predictions")
        if self.kind == "retinanet":
            out = one_stage_forward(self.teacher, self.student, images, targets, class_map=self.class_map,
                                    **self.needs)
        else:
            out = two_stage_forward(self.teacher, self.student, images, targets, sharing=self.sharing,
                                    class_map=self.class_map, **self.needs)
        losses = {f"det/{name}": value for name, value in out.det_losses.items()}
        losses.update(self.spec.terms(self, out))
        return losses

    def loss_weights(self, step: int, total_steps: int) -> dict[str, float]:
        """Weight of every loss key at `step`, plus stat/decay_w = w(t).

        kd/x weighs w(t) * lambda_x. A det/x key the method reweighs (Chen's classifier loss, 0)
        weighs 1 - w(t) * (1 - lambda_x): the method's value at w = 1, plain training at w = 0.
        """
        w = decay_weight(self.decay, step, total_steps, **self.decay_kwargs)
        weights = dict.fromkeys(DET_KEYS[self.kind], 1.0)
        for key, weight in self.weights.items():
            weights[key] = w * weight if key.startswith("kd/") else 1.0 - w * (1.0 - weight)
        weights["stat/decay_w"] = w
        return weights


def _check_options(numbers: dict[str, float], *, cls_gate: str, reg_gate: str, fpn_norm: str, sharing: str,
                   decay: str, decay_kwargs: dict[str, Any]) -> None:
    for name, value in numbers.items():
        # weights may be 0 (term off); beta and tau scale a division, so they must be positive
        if value < 0 or (value == 0 and name in ("beta", "tau")):
            raise ConfigError(f"distill.{name} must be {'>= 0' if 'weight' in name else '> 0'}, "
                              f"got {value}")
    check_gate("cls_gate", cls_gate)
    check_fpn_norm(fpn_norm)
    check_gate("reg_gate", reg_gate)
    check_decay(decay)
    if sharing not in SHARINGS:
        raise ConfigError(f"distill.sharing: unknown value '{sharing}' (valid: {', '.join(SHARINGS)})")
    try:  # fail now, not at the first logging step, on a misspelt decay argument
        decay_weight(decay, 0, 1, **decay_kwargs)
    except TypeError as err:
        raise ConfigError(f"distill.decay_kwargs: {err} (valid: step_fraction, gamma)") from err


def _check_pair(teacher: nn.Module, student: nn.Module, class_map: ClassMap | None) -> str:
    """The pair's detector kind; ConfigError unless both are one supported kind and compatible."""
    kinds = detector_kind(teacher), detector_kind(student)
    if kinds[0] != kinds[1]:
        raise ConfigError(f"distill: teacher is {kinds[0]} but student is {kinds[1]}; both must be "
                          "the same kind of detector")
    if kinds[0] not in SUPPORTED_KINDS:
        raise ConfigError(f"distill: distilling {kinds[0]} is not supported "
                          f"(supported: {', '.join(SUPPORTED_KINDS)})")
    if kinds[0] == "retinanet":
        check_one_stage_pair(teacher, student, class_map=class_map)
    else:
        check_two_stage_pair(teacher, student, class_map=class_map)
    return kinds[0]
