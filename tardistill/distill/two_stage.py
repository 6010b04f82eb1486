"""Faster R-CNN training forward with region proposal sharing (METHOD.md section 1).

Student and teacher see one preprocessed batch. The student's RPN and RoI sampler pick the RoIs; the
teacher's box head scores exactly those RoIs, so both heads can be compared row by row.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss

from tardistill.distill.class_map import ClassMap, check_class_counts
from tardistill.errors import ConfigError

SHARINGS = ("student", "union")


@dataclass
class TwoStageOutputs:
    """What the KD terms need from one training forward; R = sampled RoIs over the whole batch."""

    det_losses: dict[str, Tensor]  # torchvision's four Faster R-CNN losses, unprefixed
    gt_boxes: list[Tensor]  # per image, in the pixels of the resized network input
    student_features: dict[str, Tensor]
    proposals: Tensor  # [R, 4], the sampled RoIs
    labels: Tensor  # [R], 0 = background
    matched_gt_boxes: Tensor  # [R, 4]; meaningful where labels > 0
    student_logits: Tensor  # [R, C + 1]
    student_deltas: Tensor  # [R, 4 * (C + 1)]
    teacher_features: dict[str, Tensor] | None = None
    teacher_logits: Tensor | None = None
    teacher_deltas: Tensor | None = None
    regression_targets: Tensor | None = None  # [R, 4], the student's box coder; meaningful where labels > 0
    anchors_per_level: list[Tensor] | None = None  # the RPN's anchors, see `anchors_by_level`
    box_coder: BoxCoder | None = None  # the student's; the pair check made the teacher's encode alike


def num_classes_of(model: FasterRCNN) -> int:
    """Classes the box predictor scores, background included."""
    cls_score = getattr(model.roi_heads.box_predictor, "cls_score", None)
    if not isinstance(cls_score, nn.Linear):
        raise ConfigError("distill: cannot read the class count; the box predictor needs a "
                          "`cls_score` Linear layer like torchvision's FastRCNNPredictor")
    return cls_score.out_features


def _transform_settings(model: nn.Module) -> dict[str, object]:
    t = model.transform
    return {
        "min_size": tuple(t.min_size), "max_size": t.max_size,
        "image_mean": tuple(float(v) for v in t.image_mean),
        "image_std": tuple(float(v) for v in t.image_std),
        "size_divisible": t.size_divisible, "fixed_size": t.fixed_size,
    }


def check_same_preprocessing(teacher: nn.Module, student: nn.Module) -> None:
    """Raise ConfigError unless both detectors' transforms would make the same network input.

    Shared by both kinds: the student's transform makes the one batch both models see.
    """
    t_settings, s_settings = _transform_settings(teacher), _transform_settings(student)
    differ = [f"{k}: teacher {t_settings[k]}, student {s_settings[k]}"
              for k in t_settings if t_settings[k] != s_settings[k]]
    if differ:
        raise ConfigError("distill: teacher and student must preprocess images identically "
                          "(one shared batch); differs: " + "; ".join(differ))


def check_same_box_coder(teacher_weights: tuple, student_weights: tuple) -> None:
    """Raise ConfigError unless both box coders encode deltas alike, so the deltas can be compared."""
    if tuple(teacher_weights) != tuple(student_weights):
        raise ConfigError(f"distill: box coder weights differ (teacher {teacher_weights}, student "
                          f"{student_weights}), so their box deltas cannot be compared")


def check_two_stage_pair(teacher: FasterRCNN, student: FasterRCNN, *, class_map: ClassMap | None = None
                         ) -> None:
    """Raise ConfigError unless the two detectors can share one batch, one RoI set and one class list
    (or classes that `class_map` maps onto each other)."""
    for role, model in (("teacher", teacher), ("student", student)):
        if model.roi_heads.has_mask() or model.roi_heads.has_keypoint():
            raise ConfigError(f"distill: the {role} has mask or keypoint heads; only box detectors "
                              "are supported")
    check_class_counts(num_classes_of(teacher), num_classes_of(student), class_map)
    check_same_preprocessing(teacher, student)
    check_same_box_coder(teacher.roi_heads.box_coder.weights, student.roi_heads.box_coder.weights)


def check_boxes(targets: list[dict[str, Tensor]]) -> None:
    """Raise ValueError on a target whose boxes are not [K, 4] with positive width and height."""
    # The same guard as GeneralizedRCNN.forward: a zero-size box would turn the losses into nan.
    for index, target in enumerate(targets):
        boxes = target["boxes"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {index}: boxes must have shape [K, 4], got {tuple(boxes.shape)}")
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if degenerate.any():
            box = boxes[degenerate.nonzero()[0, 0]].tolist()
            raise ValueError(f"target {index}: boxes need positive width and height, got {box}")


def backbone_features(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """The backbone's FPN levels by name, for any torchvision detector."""
    features = model.backbone(images)
    # Same convention as GeneralizedRCNN for single-map backbones.
    return OrderedDict([("0", features)]) if isinstance(features, Tensor) else features


def _box_head(model: FasterRCNN, features: dict[str, Tensor], rois: list[Tensor],
              image_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, rois, image_sizes)
    return heads.box_predictor(heads.box_head(pooled))


def _matched_gt_boxes(gt_boxes: list[Tensor], matched_idxs: list[Tensor]) -> Tensor:
    rows = []
    for boxes, idxs in zip(gt_boxes, matched_idxs):
        # Images without GT have only background RoIs; a dummy box keeps the indexing valid.
        boxes = boxes if boxes.numel() else boxes.new_zeros(1, 4)
        rows.append(boxes[idxs])
    return torch.cat(rows)


def class_deltas(box_regression: Tensor, labels: Tensor) -> Tensor:
    """Pick each row's deltas for its own class: Tensor[R, 4 * (C + 1)], Tensor[R] -> Tensor[R, 4]."""
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    return per_class[torch.arange(labels.numel(), device=labels.device), labels]


def anchors_by_level(generator: AnchorGenerator, images: ImageList, features: list[Tensor]
                     ) -> list[Tensor]:
    """The anchors of one image of the batch, split by FPN level; every padded image has the same.

    Returns:
        L tensors [H_l * W_l * A_l, 4] in float32, xyxy input pixels, in the generator's
        (row, column, anchor) order.
    """
    # The generator reads only the maps' sizes and dtype: float32 stand-ins keep the anchors exact
    # under autocast, where bf16 feature maps would round them by whole pixels.
    shapes = [f.new_zeros(1, 1, *f.shape[-2:], dtype=torch.float32) for f in features]
    anchors = generator(ImageList(images.tensors[:1], images.image_sizes[:1]), shapes)[0]
    sizes = [f.shape[-2] * f.shape[-1] * a for f, a in zip(features, generator.num_anchors_per_location())]
    return list(anchors.split(sizes))


def two_stage_forward(teacher: FasterRCNN, student: FasterRCNN, images: list[Tensor],
                      targets: list[dict[str, Tensor]], *, sharing: str = "student",
                      teacher_features: bool = True, teacher_head: bool = True,
                      level_anchors: bool = False, class_map: ClassMap | None = None) -> TwoStageOutputs:
    """Student training forward plus, on the same batch and RoIs, the frozen teacher's outputs.

    Teacher outputs are computed under no_grad, not inference_mode: inference tensors may not be
    saved for backward, and several KD terms multiply or subtract them with student tensors.

    Args:
        sharing: student (the student's proposals only) | union (plus the teacher's eval-mode RPN
            proposals, its own post-NMS top-N per image, before sampling).
        teacher_features, teacher_head: skip the teacher parts no active KD term needs.
        level_anchors: also return the RPN's anchors by FPN level (FGFI's mask needs them).
        class_map: gathers the teacher's logits and deltas onto the student's classes.
    """
    if sharing not in SHARINGS:
        raise ConfigError(f"distill.sharing: unknown value '{sharing}' (valid: {', '.join(SHARINGS)})")
    image_list, targets = student.transform(images, targets)
    check_boxes(targets)
    s_features = backbone_features(student, image_list.tensors)
    proposals, rpn_losses = student.rpn(image_list, s_features, targets)
    t_features = None
    if teacher_features or teacher_head or sharing == "union":
        with torch.no_grad():
            t_features = backbone_features(teacher, image_list.tensors)
            if sharing == "union":
                t_proposals, _ = teacher.rpn(image_list, t_features)
                proposals = [torch.cat([s, t]) for s, t in zip(proposals, t_proposals)]
    rois, matched_idxs, labels, regression_targets = student.roi_heads.select_training_samples(
        proposals, targets)
    s_logits, s_deltas = _box_head(student, s_features, rois, image_list.image_sizes)
    loss_classifier, loss_box_reg = fastrcnn_loss(s_logits, s_deltas, labels, regression_targets)
    gt_boxes = [t["boxes"] for t in targets]
    out = TwoStageOutputs(
        det_losses={"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, **rpn_losses},
        gt_boxes=gt_boxes, student_features=s_features, proposals=torch.cat(rois),
        labels=torch.cat(labels), matched_gt_boxes=_matched_gt_boxes(gt_boxes, matched_idxs),
        student_logits=s_logits, student_deltas=s_deltas,
        teacher_features=t_features if teacher_features else None,
        regression_targets=torch.cat(regression_targets), box_coder=student.roi_heads.box_coder)
    if level_anchors:
        out.anchors_per_level = anchors_by_level(student.rpn.anchor_generator, image_list,
                                                 list(s_features.values()))
    if teacher_head:
        with torch.no_grad():
            out.teacher_logits, out.teacher_deltas = _box_head(teacher, t_features, rois,
                                                               image_list.image_sizes)
            if class_map is not None:
                out.teacher_logits = class_map.softmax_logits(out.teacher_logits)
                out.teacher_deltas = class_map.class_deltas(out.teacher_deltas)
    return out
