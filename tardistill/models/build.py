"""`build_detector`: torchvision Faster R-CNN + FPN or RetinaNet, sized for the experiment."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead

from tardistill.errors import ConfigError
from tardistill.models.backbones import build_fpn_backbone
from tardistill.models.roi_align import use_fast_backward_roi_align
from tardistill.models.weights import load_backbone_weights, load_detector_weights
from tardistill.models.zoo import build_zoo_detector, zoo_architecture

DETECTOR_KINDS = ("faster_rcnn", "retinanet")
RETINANET_LEVELS = ("p3_p7", "p2_p6")
HEAD_NORMS = ("none", "group")
GROUP_NORM_GROUPS = 32  # torchvision's v2 RetinaNet head


def build_detector(kind: str, backbone: str, *, num_classes: int, width_multiplier: float = 1.0,
                   fpn_channels: int = 256, head_width: int = 1024, min_size: int = 128,
                   max_size: int = 128, anchor_sizes: list[int] | None = None,
                   rpn_pre_nms_top_n_train: int = 2000, rpn_post_nms_top_n_train: int = 2000,
                   rpn_pre_nms_top_n_test: int = 1000, rpn_post_nms_top_n_test: int = 1000,
                   rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 512,
                   detections_per_image: int = 100, score_threshold: float = 0.05,
                   retinanet_levels: str = "p3_p7", head_norm: str = "none",
                   architecture: str | None = None, pretrained_setup: bool | None = None,
                   weights: str | None = None, backbone_weights: str | None = None) -> nn.Module:
    """Build a detector for `num_classes` object classes (background is added here).

    Args:
        anchor_sizes: one base size per FPN level; RetinaNet adds the 2^(1/3), 2^(2/3) octave scales.
        retinanet_levels, head_norm: RetinaNet's FPN levels (p3_p7 | p2_p6) and head normalisation
            (none | group); see ModelConfig.
        architecture: a torchvision model-zoo builder (models/zoo.py), e.g. fasterrcnn_resnet50_fpn_v2.
            It fixes the backbone, FPN, head and anchors, so backbone, width_multiplier,
            fpn_channels, head_width and anchor_sizes are not used; the image size, proposal counts
            and thresholds still are.
        pretrained_setup: set a zoo model up for loaded weights as torchvision does (frozen batch
            norm, frozen first stages); None means "when weights or backbone_weights is given".
        weights, backbone_weights: local files only; nothing is ever downloaded.
    """
    if kind not in DETECTOR_KINDS:
        raise ConfigError(f"model.kind: unknown detector '{kind}' (valid: {', '.join(DETECTOR_KINDS)})")
    _check_retinanet_options(kind, retinanet_levels, head_norm, architecture)
    common = dict(min_size=min_size, max_size=max_size)
    if kind == "retinanet":
        settings = dict(common, score_thresh=score_threshold, detections_per_img=detections_per_image)
    else:  # Faster R-CNN's name differs; its image transform would swallow RetinaNet's without a word
        settings = dict(common, box_detections_per_img=detections_per_image,
                        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
                        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
                        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
                        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
                        rpn_batch_size_per_image=rpn_batch_size_per_image,
                        box_batch_size_per_image=box_batch_size_per_image, box_score_thresh=score_threshold)
    if architecture:
        zoo_architecture(architecture, kind)
        if pretrained_setup is None:
            pretrained_setup = bool(weights or backbone_weights)
        model = build_zoo_detector(architecture, num_classes=num_classes, pretrained=pretrained_setup,
                                   **settings)
    else:
        fpn = build_fpn_backbone(backbone, kind=kind, width_multiplier=width_multiplier,
                                 fpn_channels=fpn_channels, retinanet_levels=retinanet_levels)
        model = _build_own(kind, fpn, backbone=backbone, num_classes=num_classes, head_width=head_width,
                           anchor_sizes=anchor_sizes, image_size=min_size, head_norm=head_norm,
                           settings=settings)
    use_fast_backward_roi_align(model)  # CPU training speed only; outputs unchanged
    if backbone_weights:
        load_backbone_weights(model.backbone.body, Path(backbone_weights))
    if weights:
        load_detector_weights(model, Path(weights))
    return model


def _check_retinanet_options(kind: str, levels: str, head_norm: str, architecture: str | None) -> None:
    if levels not in RETINANET_LEVELS:
        raise ConfigError(f"model.retinanet_levels: unknown '{levels}' (valid: {', '.join(RETINANET_LEVELS)})")
    if head_norm not in HEAD_NORMS:
        raise ConfigError(f"model.head_norm: unknown '{head_norm}' (valid: {', '.join(HEAD_NORMS)})")
    # the first of each list is the default, what every detector kind and zoo architecture accepts
    changed = [name for name, value, default in (("retinanet_levels", levels, RETINANET_LEVELS[0]),
                                                 ("head_norm", head_norm, HEAD_NORMS[0])) if value != default]
    if changed and kind != "retinanet":
        raise ConfigError(f"model.{changed[0]}: applies to RetinaNet only (model.kind is {kind})")
    if changed and architecture:
        raise ConfigError(f"model.{changed[0]}: the zoo architecture {architecture} fixes its FPN and head")


def _build_own(kind: str, fpn: nn.Module, *, backbone: str, num_classes: int, head_width: int,
               anchor_sizes: list[int] | None, image_size: int, head_norm: str,
               settings: dict[str, Any]) -> nn.Module:
    """Faster R-CNN or RetinaNet on this project's FPN backbone, with one anchor size per level."""
    num_levels = _count_levels(fpn, image_size)
    sizes = list(anchor_sizes or [16, 32, 64, 128, 256])
    if len(sizes) != num_levels:
        raise ConfigError(f"model.anchor_sizes: {len(sizes)} sizes given, but the {backbone} FPN "
                          f"for {kind} has {num_levels} levels")
    if kind == "retinanet":
        anchors = AnchorGenerator(tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes),
                                  ((0.5, 1.0, 2.0),) * num_levels)
        head = None
        if head_norm == "group":
            if fpn.out_channels % GROUP_NORM_GROUPS:
                raise ConfigError(f"model.head_norm: group needs model.fpn_channels divisible by "
                                  f"{GROUP_NORM_GROUPS}, got {fpn.out_channels}")
            head = RetinaNetHead(fpn.out_channels, anchors.num_anchors_per_location()[0], num_classes + 1,
                                 norm_layer=partial(nn.GroupNorm, GROUP_NORM_GROUPS))
        return RetinaNet(fpn, num_classes + 1, anchor_generator=anchors, head=head, **settings)
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * num_levels)
    resolution = 7
    box_head = TwoMLPHead(fpn.out_channels * resolution**2, head_width)
    return FasterRCNN(fpn, None, rpn_anchor_generator=anchors, box_head=box_head,
                      box_predictor=FastRCNNPredictor(head_width, num_classes + 1), **settings)


def _count_levels(fpn: nn.Module, image_size: int) -> int:
    """Number of FPN outputs, found by a tiny dry run (levels depend on the extra blocks)."""
    was_training = fpn.training
    fpn.eval()
    with torch.no_grad():
        count = len(fpn(torch.zeros(1, 3, image_size, image_size)))
    fpn.train(was_training)
    return count


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())
