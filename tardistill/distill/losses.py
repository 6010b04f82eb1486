"""TAR loss terms and gates as pure functions (METHOD.md sections 2-4). Teacher inputs are detached."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tardistill.errors import ConfigError


def fpn_imitation_loss(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor) -> Tensor:
    """Gaussian-masked feature imitation on one FPN level, averaged over images.

    Per image: sum_ij M_ij * ||S_ij - T_ij||^2 / (2 * max(sum_ij M_ij, 1)). Normalising per image
    (then taking the mean) keeps the term independent of the batch size and lets every image count
    the same, whatever the size of its objects. Sum the result over levels at the call site.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].
        mask: Tensor[N, H, W].

    Returns:
        scalar Tensor.
    """
    # float32 so the squared distances neither overflow nor underflow under autocast.
    diff = student_feat.float() - teacher_feat.detach().float()
    per_cell = diff.pow(2).sum(dim=1)  # [N, H, W]
    mask = mask.to(per_cell)
    numer = (mask * per_cell).flatten(1).sum(dim=1)
    denom = 2 * mask.flatten(1).sum(dim=1).clamp(min=1.0)
    return (numer / denom).mean()


def cls_distill_loss(student_logits: Tensor, teacher_logits: Tensor, *, tau: float) -> Tensor:
    """tau^2 * KL(p_T || p_S) with p = softmax(z / tau), averaged over the given rows.

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1], background included; pass only the
            selected RoIs.

    Returns:
        scalar Tensor; 0 (still attached to the student's graph) when R == 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / tau, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return kl * tau**2


def _true_class_prob(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.float().softmax(dim=1).gather(1, labels.clamp(min=0)[:, None])[:, 0]


def _cls_adaptive(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    # Compared at tau = 1 whatever the distillation temperature: this asks who is right, not how soft.
    teacher_better = _true_class_prob(teacher_logits, labels) > _true_class_prob(student_logits, labels)
    return (labels > 0) & teacher_better


CLS_GATES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "adaptive": _cls_adaptive,
    "positive": lambda student_logits, teacher_logits, labels: labels > 0,
    "all": lambda student_logits, teacher_logits, labels: torch.ones_like(labels, dtype=torch.bool),
}


def cls_gate(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, mode: str) -> Tensor:
    """Which RoIs get the classification KD term.

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1].
        labels: Tensor[R] int64, 0 = background.
        mode: adaptive (positives with p_T(y) > p_S(y)) | positive | all.

    Returns:
        Tensor[R] bool.
    """
    check_gate("cls_gate", mode)
    with torch.no_grad():
        return CLS_GATES[mode](student_logits, teacher_logits.detach(), labels)


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
                     num_sampled: int) -> Tensor:
    """Smooth-L1 (beta = 1/9) from S's to T's deltas on the selected rows, normalised like Fast R-CNN.

    Args:
        student_deltas, teacher_deltas: Tensor[P, 4], each model's deltas for the GT class.
        selected: Tensor[P] bool.
        num_sampled: all RoIs sampled in the batch (positives and negatives), the denominator
            torchvision's fastrcnn_loss uses for its box loss.

    Returns:
        scalar Tensor, summed over the 4 coordinates; 0 when nothing is selected.
    """
    loss = F.smooth_l1_loss(student_deltas[selected].float(), teacher_deltas[selected].detach().float(),
                            beta=1 / 9, reduction="sum")
    return loss / max(num_sampled, 1)


def check_gate(option: str, mode: str) -> None:
    """Raise ConfigError when `mode` is not a valid value of `option` (cls_gate or reg_gate)."""
    valid = {"cls_gate": CLS_GATES, "reg_gate": REG_GATES}[option]
    if mode not in valid:
        raise ConfigError(f"distill.{option}: unknown gate '{mode}' (valid: {', '.join(valid)})")
