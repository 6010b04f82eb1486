"""TAR loss terms and gates as pure functions (METHOD.md sections 2-4, 6). Teacher inputs are detached."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tardistill.errors import ConfigError


FPN_NORMS = ("standard", "channel_mean", "sum", "channel_softmax", "standard_softmax", "level_softmax",
             "pyramid_softmax")
# The units that read a temperature.
SOFTMAX_FPN_NORMS = ("channel_softmax", "standard_softmax", "level_softmax", "pyramid_softmax")


def fpn_imitation_loss(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor, *,
                       norm: str = "standard", tau: float = 1.0, scale: Tensor | None = None) -> Tensor:
    """Gaussian-masked feature imitation on one FPN level, averaged over images.

    Per image: sum_ij M_ij * d(S_ij, T_ij) / (2 * max(sum_ij M_ij, 1)). Normalising per image
    (then taking the mean) keeps the term independent of the batch size and lets every image count
    the same, whatever the size of its objects. Average the result over levels at the call site.

    The per-cell distance d depends on `norm` (docs/METHOD.md, "Loss units"):
    - standard: each map is standardised per image and channel over its cells (zero mean, unit
      variance, as PKD does), then the squared distance is averaged over channels. The term is then
      about 1 for unrelated features and 0 for equal ones, whatever the channel count or the
      features' scale, so lambda = 1 is a sane weight on any pair.
    - channel_mean: the squared distance of the raw features averaged over channels; free of the
      channel count but not of the feature scale.
    - sum: the squared distance summed over channels (the first reconstruction's units: the term ran
      at 600-2,100 on the built-in benchmark and needed lambda_fpn near 5e-4).
    - channel_softmax: not a squared distance but CWD's (Shu et al., ICCV 2021): see
      masked_channel_kl, which this delegates to. Not free of the feature scale.
    - standard_softmax: the same KL on maps standardised as in `standard` first, so the softmax's
      sharpness no longer follows the features' scale.
    - level_softmax: the same KL on both maps divided by one number per image and level, the
      teacher's spread (pyramid_spread of this level alone): free of the feature scale like
      standard_softmax, but each channel keeps its sharpness relative to the others and the student
      is still pulled to the teacher's scale.
    - pyramid_softmax: the same KL on both maps divided by `scale`, the teacher's spread over the
      whole pyramid (pyramid_spread, one number per image): free of the feature scale, while the
      channels and the levels keep their sharpness relative to one another, as in channel_softmax.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].
        mask: Tensor[N, H, W].
        tau: the softmax temperature of the softmax units; the squared distances ignore it.
        scale: Tensor[N], pyramid_softmax's divisor (pyramid_spread of the teacher's levels); only
            that unit reads it, and it needs it.

    Returns:
        scalar Tensor.
    """
    check_fpn_norm(norm)
    if norm == "level_softmax":  # pyramid_softmax with this level as the whole pyramid
        scale = pyramid_spread([teacher_feat])
    elif norm != "pyramid_softmax":
        scale = None  # only the two spread units read it
    elif scale is None:
        raise ValueError("fpn_imitation_loss: pyramid_softmax needs the teacher's spread over all levels "
                         "(scale=pyramid_spread(teacher levels))")
    if norm in SOFTMAX_FPN_NORMS:
        return masked_channel_kl(student_feat, teacher_feat, mask, standardize=norm == "standard_softmax",
                                 divisor=scale, tau=tau)
    # float32 so the squared distances neither overflow nor underflow under autocast.
    student, teacher = student_feat.float(), teacher_feat.detach().float()
    if norm == "standard":
        student, teacher = standardize_per_channel(student), standardize_per_channel(teacher)
    squared = (student - teacher).pow(2)
    per_cell = squared.sum(dim=1) if norm == "sum" else squared.mean(dim=1)  # [N, H, W]
    mask = mask.to(per_cell)
    numer = (mask * per_cell).flatten(1).sum(dim=1)
    denom = 2 * mask.flatten(1).sum(dim=1).clamp(min=1.0)
    return (numer / denom).mean()


def masked_channel_kl(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor, *,
                      standardize: bool = False, divisor: Tensor | None = None, tau: float = 1.0) -> Tensor:
    """CWD's distance under TAR's mask: each channel map becomes a distribution over its cells,
    p(x, y) proportional to M(x, y) exp(F(x, y)), and KL(p_T || p_S) is averaged over channels, then
    over images.

    The mask enters as a prior on the cells rather than as a weight on per-cell KL contributions,
    which can be negative: the result stays a KL (>= 0, 0 for equal maps). A mask of ones gives
    CWD's term at tau 1 (methods/cwd.py); cells where M = 0 (outside a truncated mask) drop out, and
    an image without boxes (M = 0 everywhere) adds 0, as with the squared distances.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].
        mask: Tensor[N, H, W].
        standardize: standardise each channel map over its cells first (standardize_per_channel):
            every channel gets the same sharpness whatever the features' scale, and unrelated maps
            give a KL of about 1 (the exponential tilt of a standard normal has mean 1).
        divisor: Tensor[N], one number per image both maps are divided by (pyramid_spread of the
            teacher): free of the features' scale, while the channels keep their relative sharpness
            and the student's scale is still compared. None (CWD): the softmax's sharpness follows
            the features' scale.
        tau: the temperature: p is proportional to M exp(F / tau), and the KL is multiplied by
            tau^2 as in CWD, which keeps unrelated standardised maps near 1 at any tau.

    Returns:
        scalar Tensor.
    """
    n, c = student_feat.shape[:2]
    if standardize:  # over all cells, as `standard`: the statistics do not depend on the mask
        student_feat = standardize_per_channel(student_feat.float())
        teacher_feat = standardize_per_channel(teacher_feat.detach().float())
    if divisor is not None:
        divisor = divisor.detach().float()[:, None, None, None]
        student_feat, teacher_feat = student_feat.float() / divisor, teacher_feat.detach().float() / divisor
    mask = mask.float().to(student_feat.device).flatten(1)  # [N, HW]
    has_boxes = mask.amax(dim=1) > 0
    # An image without boxes gets a mask of ones so its softmax stays finite, then counts 0.
    mask = torch.where(has_boxes[:, None], mask, torch.ones_like(mask))
    inside = (mask > 0)[:, None, :]  # [N, 1, HW]
    log_prior = mask.log()[:, None, :]  # -inf outside a truncated mask: those cells get p = 0
    # float32 under autocast: softmax over many cells.
    log_p_student = (student_feat.float().reshape(n, c, -1) / tau + log_prior).log_softmax(dim=2)
    log_p_teacher = (teacher_feat.detach().float().reshape(n, c, -1) / tau + log_prior).log_softmax(dim=2)
    per_cell = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    kl = torch.where(inside, per_cell, torch.zeros_like(per_cell)).sum(dim=2).mean(dim=1)  # [N]
    return (kl * has_boxes).mean() * tau**2


def pyramid_spread(teacher_levels: list[Tensor], eps: float = 1e-5) -> Tensor:
    """How widely the teacher's maps spread over their cells, one number per image: each channel
    map's variance over its cells, averaged over channels and then over the given levels, square-rooted.

    Args:
        teacher_levels: L tensors [N, C, H_l, W_l].

    Returns:
        Tensor[N] in float32; a teacher scaled by k gives k times it.
    """
    per_level = [level.detach().float().var(dim=(2, 3), unbiased=False).mean(dim=1) for level in teacher_levels]
    return (torch.stack(per_level).mean(dim=0) + eps).sqrt()


def standardize_per_channel(features: Tensor, eps: float = 1e-5) -> Tensor:
    """Each image's channel map shifted to zero mean and scaled to unit variance over its cells.

    Args:
        features: Tensor[N, C, H, W].

    Returns:
        Tensor[N, C, H, W]; a constant map becomes 0.
    """
    mean = features.mean(dim=(2, 3), keepdim=True)
    var = features.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (features - mean) / (var + eps).sqrt()


def cls_distill_loss(student_logits: Tensor, teacher_logits: Tensor, *, tau: float,
                     num_sampled: int | None = None) -> Tensor:
    """tau^2 * KL(p_T || p_S) with p = softmax(z / tau), summed over the given rows and divided by
    `num_sampled`.

    Dividing by every sampled RoI, as the cross-entropy beside it does, gives each selected RoI the
    weight it has in the detection loss: the term cannot outweigh the classifier's own loss at
    lambda = 1 however few RoIs the gate selects (docs/METHOD.md, "Loss units").

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1], background included; pass only the
            selected RoIs.
        num_sampled: the denominator, all RoIs sampled in the batch; None averages over the R rows.

    Returns:
        scalar Tensor; 0 (still attached to the student's graph) when R == 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / tau, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum")
    denominator = student_logits.shape[0] if num_sampled is None else max(num_sampled, 1)
    return kl * tau**2 / denominator


def sigmoid_distill_loss(student_logits: Tensor, teacher_logits: Tensor, *, tau: float,
                         num_positives: int) -> Tensor:
    """Per-class binary distillation for sigmoid classifiers (RetinaNet), normalised by positives.

    Each row and class contributes BCE(sigmoid(z_S / tau), sigmoid(z_T / tau)) minus the teacher's own
    entropy, i.e. the binary KL divergence. The entropy has no gradient, so training is that of the
    BCE; leaving it out makes the term 0 when S == T, as the softmax KL of section 3 is.

    Args:
        student_logits, teacher_logits: Tensor[R, C]; pass only the selected anchors.
        num_positives: positive anchors in the batch, the denominator.

    Returns:
        scalar Tensor, summed over classes and rows; 0 (still attached to the student's graph) when
        R == 0 or num_positives == 0.
    """
    if student_logits.shape[0] == 0 or num_positives == 0:
        return student_logits.sum() * 0.0
    student_scaled = student_logits.float() / tau
    teacher_scaled = teacher_logits.detach().float() / tau
    p_t = teacher_scaled.sigmoid()
    # KL per element from log-probabilities: BCE and entropy summed separately would cancel to
    # float32 noise over the many anchors near the prior probability.
    kl = (p_t * (F.logsigmoid(teacher_scaled) - F.logsigmoid(student_scaled))
          + (1 - p_t) * (F.logsigmoid(-teacher_scaled) - F.logsigmoid(-student_scaled)))
    return kl.sum() / num_positives


def _true_class_prob(logits: Tensor, labels: Tensor, sigmoid: bool) -> Tensor:
    probs = logits.float().sigmoid() if sigmoid else logits.float().softmax(dim=1)
    return probs.gather(1, labels.clamp(min=0)[:, None])[:, 0]


# Each gate maps (p_S(y), p_T(y), labels), all Tensor[R], to the Tensor[R] bool selection.
CLS_GATES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "adaptive": lambda p_s, p_t, labels: (labels > 0) & (p_t > p_s),
    "positive": lambda p_s, p_t, labels: labels > 0,
    "all": lambda p_s, p_t, labels: torch.ones_like(labels, dtype=torch.bool),
}


def cls_gate(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, mode: str,
             sigmoid: bool = False) -> Tensor:
    """Which RoIs (or anchors) get the classification KD term.

    p_S(y) and p_T(y) are compared at tau = 1 whatever the distillation temperature: the gate asks
    who is right, not how soft.

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1] (softmax) or Tensor[R, C] (sigmoid).
        labels: Tensor[R] int64, 0 = background.
        mode: adaptive (positives with p_T(y) > p_S(y)) | positive | all.
        sigmoid: per-class sigmoid probabilities (RetinaNet) instead of a softmax over classes.

    Returns:
        Tensor[R] bool.
    """
    check_gate("cls_gate", mode)
    with torch.no_grad():
        p_s = _true_class_prob(student_logits, labels, sigmoid)
        p_t = _true_class_prob(teacher_logits.detach(), labels, sigmoid)
        return CLS_GATES[mode](p_s, p_t, labels)


def paired_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU of row i of `boxes_a` with row i of `boxes_b`: Tensor[R, 4] x Tensor[R, 4] -> Tensor[R].

    Row-wise rather than torchvision's box_iou, which would build an R x R matrix to use its diagonal.
    """
    top_left = torch.maximum(boxes_a[:, :2], boxes_b[:, :2])
    bottom_right = torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


REG_GATES: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "teacher_better": lambda s, t, p, gt: paired_iou(t, gt) > paired_iou(s, gt),
    "teacher_improves": lambda s, t, p, gt: paired_iou(t, gt) > paired_iou(p, gt),
    "always": lambda s, t, p, gt: torch.ones(s.shape[0], dtype=torch.bool, device=s.device),
}


def reg_gate(student_boxes: Tensor, teacher_boxes: Tensor, proposals: Tensor, gt_boxes: Tensor, *,
             mode: str) -> Tensor:
    """Which positive RoIs get the regression KD term.

    Args:
        student_boxes, teacher_boxes: Tensor[P, 4], each model's deltas for the GT class, decoded.
        proposals: Tensor[P, 4], the shared RoIs.
        gt_boxes: Tensor[P, 4], the GT box each RoI is matched to.
        mode: teacher_better (IoU_T > IoU_S) | teacher_improves (IoU_T > IoU of the proposal) | always.

    Returns:
        Tensor[P] bool.
    """
    check_gate("reg_gate", mode)
    with torch.no_grad():
        return REG_GATES[mode](student_boxes.float(), teacher_boxes.float(), proposals.float(),
                               gt_boxes.float())


def reg_distill_loss(student_deltas: Tensor, teacher_deltas: Tensor, selected: Tensor, *,
                     num_sampled: int, beta: float = 1 / 9) -> Tensor:
    """Smooth-L1 from S's to T's deltas on the selected rows, divided by `num_sampled`.

    Args:
        student_deltas, teacher_deltas: Tensor[P, 4], each model's deltas for the GT class.
        selected: Tensor[P] bool.
        num_sampled: the denominator: for Fast R-CNN all RoIs sampled in the batch (positives and
            negatives), as torchvision's fastrcnn_loss; for RetinaNet the positive anchors.
        beta: 1/9 as in torchvision's Fast R-CNN loss; 0 gives L1, RetinaNet's box loss.

    Returns:
        scalar Tensor, summed over the 4 coordinates; 0 when nothing is selected.
    """
    loss = F.smooth_l1_loss(student_deltas[selected].float(), teacher_deltas[selected].detach().float(),
                            beta=beta, reduction="sum")
    return loss / max(num_sampled, 1)


def selected_fraction(selected: Tensor) -> Tensor:
    """Fraction of True in a bool vector, 0 when empty; detached, for logging gate rates."""
    if selected.numel() == 0:
        return torch.zeros((), device=selected.device)
    return selected.detach().float().mean()


def check_gate(option: str, mode: str) -> None:
    """Raise ConfigError when `mode` is not a valid value of `option` (cls_gate or reg_gate)."""
    valid = {"cls_gate": CLS_GATES, "reg_gate": REG_GATES}[option]
    if mode not in valid:
        raise ConfigError(f"distill.{option}: unknown gate '{mode}' (valid: {', '.join(valid)})")


def check_fpn_norm(norm: str) -> None:
    """Raise ConfigError when `norm` is not a valid distill.fpn_norm."""
    if norm not in FPN_NORMS:
        raise ConfigError(f"distill.fpn_norm: unknown value '{norm}' (valid: {', '.join(FPN_NORMS)})")
