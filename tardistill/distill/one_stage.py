"""RetinaNet training forward on shared anchors, and its gated per-anchor KD terms (METHOD.md section 6).

There are no proposals. Student and teacher see one preprocessed batch and one anchor set, computed
once by the student's anchor generator; the pair check guarantees the teacher's generator and FPN
strides would give the same anchors, so row a of both heads' outputs describes the same anchor.
Positives are RetinaNet's own matcher assignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import RetinaNet
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou

from tardistill.distill.adapters import fpn_levels
from tardistill.distill.class_map import ClassMap, check_class_counts
from tardistill.distill.losses import (
    cls_gate, reg_distill_loss, reg_gate, selected_fraction, sigmoid_distill_loss)
from tardistill.distill.two_stage import (
    anchors_by_level, backbone_features, check_boxes, check_same_box_coder, check_same_preprocessing)
from tardistill.errors import ConfigError


@dataclass
class OneStageOutputs:
    """What the KD terms need from one training forward, over the whole batch.

    R = anchors in RetinaNet's classification loss (positives and negatives; anchors the matcher
    ignores, between its two IoU thresholds, are left out); P = positive anchors.
    """

    det_losses: dict[str, Tensor]  # torchvision's classification and bbox_regression, unprefixed
    gt_boxes: list[Tensor]  # per image, in the pixels of the resized network input
    student_features: dict[str, Tensor]
    labels: Tensor  # [R], the matched GT label; 0 = negative anchor (background)
    student_logits: Tensor  # [R, C]
    anchors: Tensor  # [P, 4], the positive anchors
    matched_gt_boxes: Tensor  # [P, 4]
    student_deltas: Tensor  # [P, 4]
    teacher_features: dict[str, Tensor] | None = None
    teacher_logits: Tensor | None = None  # [R, C]
    teacher_deltas: Tensor | None = None  # [P, 4]
    anchors_per_level: list[Tensor] | None = None  # every anchor, see `two_stage.anchors_by_level`
    box_coder: BoxCoder | None = None  # the student's; the pair check made the teacher's encode alike

    @property
    def num_positives(self) -> int:
        return self.anchors.shape[0]


def num_classes_of(model: RetinaNet) -> int:
    """Classes the classification head scores (torchvision's count, background column included)."""
    num_classes = getattr(model.head.classification_head, "num_classes", None)
    if num_classes is None:
        raise ConfigError("distill: cannot read the class count; the head needs a "
                          "`classification_head.num_classes` like torchvision's RetinaNetHead")
    return num_classes


def _anchor_grid(model: RetinaNet) -> dict[str, tuple]:
    generator = model.anchor_generator
    strides = tuple(stride for _, stride in fpn_levels(model.backbone).values())
    return {
        "anchor sizes": tuple(tuple(s) for s in generator.sizes),
        "aspect ratios": tuple(tuple(float(r) for r in rs) for rs in generator.aspect_ratios),
        "anchors per location": tuple(generator.num_anchors_per_location()),
        "FPN level strides": strides,
    }


def check_one_stage_pair(teacher: RetinaNet, student: RetinaNet, *, class_map: ClassMap | None = None
                         ) -> None:
    """Raise ConfigError unless both RetinaNets share one batch, one anchor grid and one class list
    (or classes that `class_map` maps onto each other)."""
    check_class_counts(num_classes_of(teacher), num_classes_of(student), class_map)
    check_same_preprocessing(teacher, student)
    check_same_box_coder(teacher.box_coder.weights, student.box_coder.weights)
    t_grid, s_grid = _anchor_grid(teacher), _anchor_grid(student)
    differ = [f"{k}: teacher {t_grid[k]}, student {s_grid[k]}" for k in t_grid if t_grid[k] != s_grid[k]]
    if differ:
        raise ConfigError("distill: teacher and student anchor grids differ, so their per-anchor "
                          "outputs would not line up; differs: " + "; ".join(differ))


def match_anchors(model: RetinaNet, anchors: list[Tensor], targets: list[dict[str, Tensor]]
                  ) -> list[Tensor]:
    """RetinaNet's own anchor assignment, exactly as `RetinaNet.compute_loss` makes it.

    Returns:
        per image Tensor[A] int64: the matched GT index, -1 background, -2 ignored.
    """
    matched_idxs = []
    for anchors_per_image, target in zip(anchors, targets):
        if target["boxes"].numel() == 0:
            matched_idxs.append(torch.full((anchors_per_image.shape[0],), Matcher.BELOW_LOW_THRESHOLD,
                                           dtype=torch.int64, device=anchors_per_image.device))
            continue
        matched_idxs.append(model.proposal_matcher(box_iou(target["boxes"], anchors_per_image)))
    return matched_idxs


def _gather_targets(matched: Tensor, valid: Tensor, positive: Tensor,
                    targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """Labels of the R valid anchors (0 = negative) and GT boxes of the P positive ones."""
    labels, boxes = [], []
    for idxs, is_valid, is_positive, target in zip(matched, valid, positive, targets):
        label = torch.zeros_like(idxs)
        label[is_positive] = target["labels"][idxs[is_positive]]
        labels.append(label[is_valid])
        boxes.append(target["boxes"][idxs[is_positive]])
    return torch.cat(labels), torch.cat(boxes)


def one_stage_forward(teacher: RetinaNet, student: RetinaNet, images: list[Tensor],
                      targets: list[dict[str, Tensor]], *, teacher_features: bool = True,
                      teacher_head: bool = True, level_anchors: bool = False,
                      class_map: ClassMap | None = None) -> OneStageOutputs:
    """Student training forward plus, on the same batch and anchors, the frozen teacher's outputs.

    Teacher outputs are computed under no_grad, not inference_mode: inference tensors may not be
    saved for backward, and the KD terms combine them with student tensors.

    Args:
        teacher_features, teacher_head: skip the teacher parts no active KD term needs.
        level_anchors: also return every anchor by FPN level (FGFI's mask needs them).
        class_map: gathers the teacher's class logits onto the student's classes.
    """
    image_list, targets = student.transform(images, targets)
    check_boxes(targets)
    s_features = backbone_features(student, image_list.tensors)
    s_head = student.head(list(s_features.values()))
    anchors = student.anchor_generator(image_list, list(s_features.values()))
    matched_idxs = match_anchors(student, anchors, targets)
    det_losses = student.head.compute_loss(targets, s_head, anchors, matched_idxs)
    matched = torch.stack(matched_idxs)  # [N, A]: a padded batch gives every image the same anchors
    valid, positive = matched != Matcher.BETWEEN_THRESHOLDS, matched >= 0
    labels, matched_gt_boxes = _gather_targets(matched, valid, positive, targets)
    out = OneStageOutputs(
        det_losses=det_losses, gt_boxes=[t["boxes"] for t in targets], student_features=s_features,
        labels=labels, student_logits=s_head["cls_logits"][valid], anchors=torch.stack(anchors)[positive],
        matched_gt_boxes=matched_gt_boxes, student_deltas=s_head["bbox_regression"][positive],
        box_coder=student.box_coder)
    if level_anchors:
        out.anchors_per_level = anchors_by_level(student.anchor_generator, image_list,
                                                 list(s_features.values()))
    if teacher_features or teacher_head:
        _add_teacher_outputs(out, teacher, image_list.tensors, valid, positive,
                             student_shape=s_head["cls_logits"].shape, features=teacher_features,
                             head=teacher_head, class_map=class_map)
    return out


def _add_teacher_outputs(out: OneStageOutputs, teacher: RetinaNet, images: Tensor, valid: Tensor,
                         positive: Tensor, *, student_shape: torch.Size, features: bool, head: bool,
                         class_map: ClassMap | None) -> None:
    """Fill in the teacher's features and its head outputs on the same anchor rows as the student's."""
    with torch.no_grad():
        t_features = backbone_features(teacher, images)
        t_head = teacher.head(list(t_features.values())) if head else None
    out.teacher_features = t_features if features else None
    if t_head is None:
        return
    t_logits = t_head["cls_logits"] if class_map is None else class_map.sigmoid_logits(t_head["cls_logits"])
    if t_logits.shape != student_shape:
        raise ConfigError(f"distill: the teacher head gives {tuple(t_logits.shape)} class "
                          f"outputs but the student {tuple(student_shape)}; their FPN levels differ in "
                          "size on this input")
    out.teacher_logits = t_logits[valid]
    out.teacher_deltas = t_head["bbox_regression"][positive]


def anchor_cls_loss(out: OneStageOutputs, *, mode: str, tau: float) -> tuple[Tensor, Tensor]:
    """Gated sigmoid KD on the anchors, and the gate rate among positive anchors.

    Args:
        mode: the cls_gate, on sigmoid probabilities of the true class: adaptive (positive anchors
            where p_T(y) > p_S(y)) | positive | all (every anchor of the classification loss).
    """
    gate = cls_gate(out.student_logits, out.teacher_logits, out.labels, mode=mode, sigmoid=True)
    loss = sigmoid_distill_loss(out.student_logits[gate], out.teacher_logits[gate], tau=tau,
                                num_positives=out.num_positives)
    return loss, selected_fraction(gate[out.labels > 0])


def anchor_reg_loss(out: OneStageOutputs, *, box_coder: BoxCoder, mode: str) -> tuple[Tensor, Tensor]:
    """Gated L1 between S's and T's deltas on positive anchors, and the gate rate.

    Args:
        box_coder: the detector's own coder; the pair check made the teacher's identical, so one
            coder decodes both models' deltas.
        mode: the reg_gate on the decoded boxes; teacher_improves compares with the anchor itself.
    """
    with torch.no_grad():
        # float32: decode_single casts the anchors to the deltas' dtype, and bf16 anchors under
        # autocast are off by whole pixels, enough to flip an IoU comparison
        student_boxes = box_coder.decode_single(out.student_deltas.detach().float(), out.anchors)
        teacher_boxes = box_coder.decode_single(out.teacher_deltas.float(), out.anchors)
    selected = reg_gate(student_boxes, teacher_boxes, out.anchors, out.matched_gt_boxes, mode=mode)
    loss = reg_distill_loss(out.student_deltas, out.teacher_deltas, selected,
                            num_sampled=out.num_positives, beta=0.0)
    return loss, selected_fraction(selected)
