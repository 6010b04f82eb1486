"""`Distiller`: a frozen teacher, a trained student and the loss terms of one distillation method."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from tardistill.distill.adapters import build_fpn_adapters, teacher_on_student_grid
from tardistill.distill.class_map import ClassMap
from tardistill.distill.decay import DECAYS, decay_weight
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs
from tardistill.distill.methods.registry import build_method
from tardistill.distill.one_stage import check_one_stage_pair, one_stage_forward
from tardistill.distill.two_stage import SHARINGS, check_two_stage_pair, two_stage_forward
from tardistill.engine.trainable import LossModule
from tardistill.errors import ConfigError

# The detection losses each kind's training forward returns, once prefixed.
DET_KEYS = {
    "faster_rcnn": ("det/loss_classifier", "det/loss_box_reg", "det/loss_objectness",
                    "det/loss_rpn_box_reg"),
    "retinanet": ("det/classification", "det/bbox_regression"),
}
SUPPORTED_KINDS = tuple(DET_KEYS)
# distill.decay "auto": the method's own schedule (`DistillMethod.default_decay`).
AUTO_DECAY = "auto"


def detector_kind(model: nn.Module) -> str:
    """faster_rcnn | retinanet | the class name, for error messages."""
    if isinstance(model, FasterRCNN):
        return "faster_rcnn"
    if isinstance(model, RetinaNet):
        return "retinanet"
    return type(model).__name__


class Distiller(LossModule):
    """Trains `student` from a frozen `teacher` with one method; `forward` returns the flat loss dict.

    Both are Faster R-CNNs (RoIs shared, METHOD.md sections 1-4) or both RetinaNets (anchors
    shared, section 6); the kind decides the forward, the method (distill/methods/: TAR or one it
    is compared with) the KD terms, and everything else is common. A KD term whose weight is 0 is
    not computed, and the teacher parts it alone needs do not run. The FPN adapters and any modules
    of the method (FGD's context blocks) live here, never inside the student, so
    `distiller.student` stays a plain torchvision detector.

    Args:
        method: a name in `registry.METHODS`, or a method already built (then give no options).
        sharing: student | union, the Faster R-CNN RoIs (two_stage.py).
        decay: auto (the method's `default_decay`) or a schedule in decay.DECAYS, for any method.
        class_map: lets a teacher trained on another label set guide the student: the teacher's
            class outputs are gathered onto the student's classes before the head terms.
        **method_options: the method's hyper-parameters by name, over its paper's defaults (TAR:
            fpn_weight, beta, cls_gate, ...). One the method does not have is a ConfigError listing
            the valid ones: `method="fitnet", fpn_weight=5` trains FitNet at 5, `method="fgd",
            fpn_weight=5` is refused.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, method: str | DistillMethod = "tar",
                 sharing: str = "student", decay: str = AUTO_DECAY, decay_kwargs: dict[str, Any] | None = None,
                 class_map: ClassMap | None = None, **method_options: Any):
        super().__init__()
        self.kind = _check_pair(teacher, student, class_map)
        self.class_map = class_map
        self.method = _resolve_method(method, method_options, self.kind)
        self.decay, self.decay_kwargs = resolve_decay(self.method, decay), dict(decay_kwargs or {})
        _check_schedule_and_sharing(self.decay, self.decay_kwargs, sharing, self.kind)
        self.teacher, self.student, self.sharing = teacher, student, sharing
        self.teacher.requires_grad_(False)
        self.weights = self.method.loss_weights(self.kind)
        self.needs = self.method.forward_needs(self.kind)
        self.adapters, self.level_matches, self.method_modules = None, {}, None
        if self.needs.teacher_features:
            self.adapters, self.level_matches = build_fpn_adapters(teacher.backbone, student.backbone)
            # Built after the adapters, so that a seed gives both the same initial values as always.
            self.method_modules = self.method.build_modules(
                {name: conv.out_channels for name, conv in self.adapters.convs.items()})
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

    def frozen_state_keys(self) -> set[str]:
        """The teacher's weights and buffers: never trained, and reloaded from its file on --resume."""
        named = [*self.teacher.named_parameters(remove_duplicate=False),
                 *self.teacher.named_buffers(remove_duplicate=False)]
        return {f"teacher.{name}" for name, _ in named}

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses (det/*, kd/*) and detached statistics (stat/*) for one training batch."""
        if not self.training:
            raise RuntimeError("Distiller.forward computes training losses; call distiller.train(), "
                               "or use distiller.student for predictions")
        needs = asdict(self.needs)
        if self.kind == "retinanet":
            out = one_stage_forward(self.teacher, self.student, images, targets, class_map=self.class_map,
                                    **needs)
        else:
            out = two_stage_forward(self.teacher, self.student, images, targets, sharing=self.sharing,
                                    class_map=self.class_map, **needs)
        losses = {f"det/{name}": value for name, value in out.det_losses.items()}
        losses.update(self.method.terms(out, self._levels(out), self.method_modules))
        return losses

    def _levels(self, out: Outputs) -> list[FpnLevel]:
        """Every student FPN level, adapted, beside the teacher's map on its grid (adapters.py); none
        when no feature term is active."""
        if self.adapters is None:
            return []
        levels = []
        for name, student_feat in self.adapters(out.student_features).items():
            match = self.level_matches[name]
            size = tuple(student_feat.shape[-2:])
            teacher_feat = teacher_on_student_grid(out.teacher_features[match.teacher], match, size)
            if tuple(teacher_feat.shape[-2:]) != size:
                raise ConfigError(f"distill: FPN level {name} of the student is {size} but the teacher's "
                                  f"level {match.teacher} gives {tuple(teacher_feat.shape[-2:])} on its grid "
                                  f"({match.resampling}, stride {match.teacher_stride} -> {match.stride}); "
                                  + self.method.fpn_remedy)
            levels.append(FpnLevel(name, student_feat, teacher_feat, match.stride))
        return levels

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


def _resolve_method(method: str | DistillMethod, options: dict[str, Any], kind: str) -> DistillMethod:
    if isinstance(method, str):
        return build_method(method, options, kind=kind)
    if options:
        raise ConfigError(f"distill: options {sorted(options)} given beside a method already built; "
                          "set them on the method")
    if kind not in method.kinds:
        raise ConfigError(f"distill.method: {method.name} distills {', '.join(method.kinds)} only, not {kind}")
    return method


def resolve_decay(method: DistillMethod, decay: str) -> str:
    """The decay schedule to use: `auto` means the method's own."""
    if decay == AUTO_DECAY:
        return method.default_decay
    if decay not in DECAYS:
        raise ConfigError(f"distill.decay: unknown decay '{decay}' (valid: {AUTO_DECAY}, {', '.join(DECAYS)})")
    return decay


def _check_schedule_and_sharing(decay: str, decay_kwargs: dict[str, Any], sharing: str, kind: str) -> None:
    if sharing not in SHARINGS:
        raise ConfigError(f"distill.sharing: unknown value '{sharing}' (valid: {', '.join(SHARINGS)})")
    if kind == "retinanet" and sharing != "student":
        raise ConfigError(f"distill.sharing: '{sharing}' shares proposals, and RetinaNet has none; "
                          "use student (both models then use the student's anchors)")
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
