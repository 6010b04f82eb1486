"""Distillation methods: how each turns one training forward into its kd/* terms.

TAR (METHOD.md sections 2-4, 6) and the baselines it is compared with (METHOD.md, "Baselines") share
the Distiller, its forwards, the FPN adapters, the decay and the logging; only these functions
differ. A method's weights say which teacher parts the forward must compute: a term weighing 0 is
neither computed nor needs its teacher part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tardistill.distill.adapters import TAR_FPN_REMEDY, FeatureAdapters
from tardistill.distill.baseline_losses import (
    BASELINE_DEFAULTS, chen_bounded_reg_loss, chen_cls_loss, chen_hint_loss, chen_teacher_bounded,
    fgd_attention, fgd_attention_loss, fgd_focal_loss, fgd_global_loss, fgfi_loss, fitnet_loss)
from tardistill.distill.baseline_masks import fgfi_masks, fgd_batch_masks
from tardistill.distill.decay import DECAYS
from tardistill.distill.global_context import build_context_blocks
from tardistill.distill.losses import (
    cls_distill_loss, cls_gate, fpn_imitation_loss, reg_distill_loss, reg_gate, selected_fraction)
from tardistill.distill.masks import gaussian_masks
from tardistill.distill.one_stage import OneStageOutputs, anchor_cls_loss, anchor_reg_loss
from tardistill.distill.two_stage import TwoStageOutputs, class_deltas
from tardistill.errors import ConfigError

if TYPE_CHECKING:
    from tardistill.distill.distiller import Distiller

Outputs = TwoStageOutputs | OneStageOutputs
# Terms that compare FPN features (they need the teacher's features and the adapters), and terms
# that compare the detection heads (they need the teacher's head outputs).
FEATURE_KEYS = ("kd/fpn", "kd/fgd_focal", "kd/fgd_attention", "kd/fgd_global")
HEAD_KEYS = ("kd/cls", "kd/reg")
# distill.decay "auto": TAR decays linearly (section 5); a baseline keeps its paper's schedule.
AUTO_DECAY = "auto"
TAR_DECAY = "linear"


@dataclass(frozen=True)
class Method:
    """One distillation method.

    terms: (distiller, forward outputs) -> the kd/* terms and stat/* rates.
    kinds: the detector kinds it distills.
    level_anchors: its terms need every anchor, by FPN level.
    modules: builds the trainable modules it owns besides the adapters (kept on the Distiller,
        never in the student) from the adapters.
    """

    terms: Callable[[Distiller, Outputs], dict[str, Tensor]]
    kinds: tuple[str, ...] = ("faster_rcnn", "retinanet")
    level_anchors: bool = False
    modules: Callable[[FeatureAdapters], nn.Module] | None = None


def adapted_levels(distiller: Distiller, out: Outputs) -> Iterator[tuple[str, Tensor, Tensor]]:
    """(level name, adapted student features, teacher features) for every FPN level."""
    adapted = distiller.adapters(out.student_features)
    for name, student_feat in adapted.items():
        teacher_feat = out.teacher_features[name]
        if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
            raise ConfigError(f"distill: FPN level {name} is {tuple(teacher_feat.shape[-2:])} in "
                              f"the teacher but {tuple(student_feat.shape[-2:])} in the student; "
                              + fpn_remedy(distiller.method))
        yield name, student_feat, teacher_feat


def fpn_remedy(method: str) -> str:
    """The end of an error about FPN levels that differ between teacher and student."""
    if method == "tar":
        return TAR_FPN_REMEDY
    return f"method {method} imitates every FPN level, so the student needs the teacher's levels"


def tar_terms(distiller: Distiller, out: Outputs) -> dict[str, Tensor]:
    """TAR: Gaussian-masked FPN imitation and the gated head terms, each only if it weighs > 0."""
    losses, weights = {}, distiller.weights
    one_stage = isinstance(out, OneStageOutputs)
    if weights["kd/fpn"] > 0:
        # The mean over levels keeps the term's scale whatever the number of levels (RetinaNet's
        # five, MobileNetV3's three); docs/METHOD.md, "Loss units".
        levels = [_gaussian_level(distiller, out, *level) for level in adapted_levels(distiller, out)]
        losses["kd/fpn"] = sum(levels) / len(levels)
    if weights["kd/cls"] > 0:
        losses["kd/cls"], losses["stat/cls_gate_rate"] = (
            anchor_cls_loss(out, mode=distiller.cls_gate, tau=distiller.tau) if one_stage
            else _roi_cls_loss(distiller, out))
    if weights["kd/reg"] > 0:
        losses["kd/reg"], losses["stat/reg_gate_rate"] = (
            anchor_reg_loss(out, box_coder=distiller.student.box_coder, mode=distiller.reg_gate)
            if one_stage else _roi_reg_loss(distiller, out))
    return losses


def _gaussian_level(distiller: Distiller, out: Outputs, name: str, student_feat: Tensor,
                    teacher_feat: Tensor) -> Tensor:
    height, width = teacher_feat.shape[-2:]
    mask = gaussian_masks(out.gt_boxes, height=height, width=width, stride=distiller.fpn_strides[name],
                          beta=distiller.beta, truncate=distiller.truncate)
    return fpn_imitation_loss(student_feat, teacher_feat, mask, norm=distiller.fpn_norm)


def _roi_cls_loss(distiller: Distiller, out: TwoStageOutputs) -> tuple[Tensor, Tensor]:
    gate = cls_gate(out.student_logits, out.teacher_logits, out.labels, mode=distiller.cls_gate)
    loss = cls_distill_loss(out.student_logits[gate], out.teacher_logits[gate], tau=distiller.tau,
                            num_sampled=out.labels.numel())
    return loss, selected_fraction(gate[out.labels > 0])


def _roi_reg_loss(distiller: Distiller, out: TwoStageOutputs) -> tuple[Tensor, Tensor]:
    positive = out.labels > 0
    labels, proposals = out.labels[positive], out.proposals[positive]
    student_deltas = class_deltas(out.student_deltas[positive], labels)
    teacher_deltas = class_deltas(out.teacher_deltas[positive], labels)
    with torch.no_grad():
        # Each detector decodes its own deltas (their coder weights were checked to match).
        student_boxes = distiller.student.roi_heads.box_coder.decode(
            student_deltas.detach(), [proposals]).reshape(-1, 4)
        teacher_boxes = distiller.teacher.roi_heads.box_coder.decode(
            teacher_deltas, [proposals]).reshape(-1, 4)
    selected = reg_gate(student_boxes, teacher_boxes, proposals, out.matched_gt_boxes[positive],
                        mode=distiller.reg_gate)
    loss = reg_distill_loss(student_deltas, teacher_deltas, selected, num_sampled=out.labels.numel())
    return loss, selected_fraction(selected)


def no_terms(distiller: Distiller, out: Outputs) -> dict[str, Tensor]:
    """none: the student trains on its detection losses alone."""
    return {}


def fitnet_terms(distiller: Distiller, out: Outputs) -> dict[str, Tensor]:
    """FitNet: unmasked imitation of every adapted FPN level."""
    return {"kd/fpn": sum(fitnet_loss(s, t) for _, s, t in adapted_levels(distiller, out))}


def fgfi_terms(distiller: Distiller, out: Outputs) -> dict[str, Tensor]:
    """FGFI: imitation on the cells whose anchors come close to a GT box."""
    levels = list(adapted_levels(distiller, out))
    shapes = [tuple(student_feat.shape[-2:]) for _, student_feat, _ in levels]
    anchors = out.anchors_per_level
    per_location = [a.shape[0] // (h * w) for a, (h, w) in zip(anchors, shapes)]
    masks = fgfi_masks(anchors, out.gt_boxes, level_shapes=shapes,
                       num_anchors_per_location=per_location, psi=distiller.options["psi"])
    return {"kd/fpn": sum(fgfi_loss(s, t, mask) for (_, s, t), mask in zip(levels, masks))}


def chen_terms(distiller: Distiller, out: TwoStageOutputs) -> dict[str, Tensor]:
    """Chen et al. 2017: hint, hard + soft RoI classification, teacher-bounded regression."""
    options = distiller.options
    losses = {"kd/fpn": sum(chen_hint_loss(s, t) for _, s, t in adapted_levels(distiller, out))}
    # kd/cls includes mu * the hard CE, which is why det/loss_classifier weighs 0 for this method.
    losses["kd/cls"] = chen_cls_loss(out.student_logits, out.teacher_logits, out.labels, mu=options["mu"],
                                     background_weight=options["background_weight"], tau=options["tau"])
    positive = out.labels > 0
    labels = out.labels[positive]
    student_deltas = class_deltas(out.student_deltas[positive], labels)
    teacher_deltas = class_deltas(out.teacher_deltas[positive], labels)
    targets = out.regression_targets[positive]
    losses["kd/reg"] = chen_bounded_reg_loss(student_deltas, teacher_deltas, targets,
                                             margin=options["margin"])
    active = chen_teacher_bounded(student_deltas, teacher_deltas, targets, margin=options["margin"])
    losses["stat/reg_gate_rate"] = selected_fraction(active)
    return losses


def fgd_terms(distiller: Distiller, out: Outputs) -> dict[str, Tensor]:
    """FGD: focal (masked, attention-weighted), attention and global terms, summed over levels."""
    totals: dict[str, Tensor] = {}
    for name, student_feat, teacher_feat in adapted_levels(distiller, out):
        for key, value in _fgd_level(distiller, out.gt_boxes, name, student_feat, teacher_feat).items():
            totals[key] = totals[key] + value if key in totals else value
    return totals


def _fgd_level(distiller: Distiller, gt_boxes: list[Tensor], name: str, student_feat: Tensor,
               teacher_feat: Tensor) -> dict[str, Tensor]:
    options, blocks = distiller.options, distiller.method_modules
    height, width = teacher_feat.shape[-2:]
    fg, bg = fgd_batch_masks(gt_boxes, height=height, width=width, stride=distiller.fpn_strides[name])
    # The student's attention is computed on its adapted features, so the attention term trains it.
    s_spatial, s_channel = fgd_attention(student_feat, temperature=options["temperature"])
    t_spatial, t_channel = fgd_attention(teacher_feat.detach(), temperature=options["temperature"])
    return {
        "kd/fgd_focal": fgd_focal_loss(student_feat, teacher_feat, fg, bg, t_spatial, t_channel,
                                       alpha=options["alpha"], beta=options["beta"]),
        "kd/fgd_attention": fgd_attention_loss(s_spatial, s_channel, t_spatial, t_channel,
                                               gamma=options["gamma"]),
        "kd/fgd_global": fgd_global_loss(student_feat, teacher_feat, blocks["student"][name](student_feat),
                                         blocks["teacher"][name](teacher_feat), lam=options["lam"]),
    }


def _fgd_blocks(adapters: FeatureAdapters) -> nn.Module:
    return build_context_blocks({name: conv.out_channels for name, conv in adapters.convs.items()})


METHODS: dict[str, Method] = {
    "tar": Method(tar_terms),
    "none": Method(no_terms),
    "fitnet": Method(fitnet_terms),
    "fgfi": Method(fgfi_terms, level_anchors=True),
    "chen2017": Method(chen_terms, kinds=("faster_rcnn",)),  # its head terms are softmax, per RoI
    "fgd": Method(fgd_terms, modules=_fgd_blocks),
}


def check_method(method: str, kind: str | None = None) -> Method:
    """The method named `method`; ConfigError if unknown, or if it cannot distill `kind` detectors."""
    if method not in METHODS:
        raise ConfigError(f"distill.method: unknown method '{method}' (valid: {', '.join(METHODS)})")
    spec = METHODS[method]
    if kind is not None and kind not in spec.kinds:
        supported = [name for name, other in METHODS.items() if kind in other.kinds]
        raise ConfigError(f"distill.method: {method} distills {', '.join(spec.kinds)} only; for {kind} "
                          f"use one of: {', '.join(supported)}")
    return spec


def resolve_decay(method: str, decay: str) -> str:
    """The decay schedule to use: `auto` means linear for TAR and the paper's schedule for a baseline."""
    if decay == AUTO_DECAY:
        return TAR_DECAY if method == "tar" else str(BASELINE_DEFAULTS[method]["decay"])
    if decay not in DECAYS:
        raise ConfigError(f"distill.decay: unknown decay '{decay}' "
                          f"(valid: {AUTO_DECAY}, {', '.join(DECAYS)})")
    return decay


def method_weights(method: str, tar_weights: dict[str, float]) -> dict[str, float]:
    """Loss key -> weight before decay: TAR's configured weights, or a baseline's paper weights."""
    return dict(tar_weights) if method == "tar" else dict(BASELINE_DEFAULTS[method]["weights"])


def method_options(method: str) -> dict[str, Any]:
    """A baseline's hyper-parameters from BASELINE_DEFAULTS (mu, psi, alpha, ...); none for TAR."""
    defaults = BASELINE_DEFAULTS.get(method, {})
    return {key: value for key, value in defaults.items() if key not in ("decay", "weights")}


def forward_needs(weights: dict[str, float], spec: Method) -> dict[str, bool]:
    """The optional parts of the training forward that the active (weight > 0) terms read."""
    active = {key for key, weight in weights.items() if weight > 0}
    return {"teacher_features": bool(active & set(FEATURE_KEYS)),
            "teacher_head": bool(active & set(HEAD_KEYS)), "level_anchors": spec.level_anchors}
