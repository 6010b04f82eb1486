"""Tiny torchvision Faster R-CNNs and RetinaNets and a two-image batch, for fast CPU tests of the distiller."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d


def _conv(in_channels: int, out_channels: int, stride: int, norm_layer: type[nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), norm_layer(out_channels),
            nn.ReLU(inplace=True)]


def _tiny_body(widths: tuple[int, ...], depth: int, norm_layer: type[nn.Module]) -> nn.Sequential:
    """A plain conv net with ResNet's stage names and strides: layer1..layer4 at strides 4..32."""
    stages = OrderedDict(stem=nn.Sequential(*_conv(3, widths[0], 2, norm_layer)))
    in_channels = widths[0]
    for k, width in enumerate(widths, start=1):
        convs = _conv(in_channels, width, 2, norm_layer)
        for _ in range(depth - 1):
            convs += _conv(width, width, 1, norm_layer)
        stages[f"layer{k}"] = nn.Sequential(*convs)
        in_channels = width
    return nn.Sequential(stages)


def tiny_faster_rcnn(*, num_classes: int = 3, widths: tuple[int, ...] = (8, 16, 32, 64), depth: int = 1,
                     fpn_channels: int = 16, head_width: int = 32,
                     returned_layers: list[int] | None = None,
                     norm_layer: type[nn.Module] = FrozenBatchNorm2d, min_size: int = 64,
                     seed: int = 0) -> FasterRCNN:
    """A tiny FPN Faster R-CNN on 64 px inputs; num_classes includes background.

    Frozen batch norm by default (as torchvision's detection backbones), so train and eval modes
    compute the same features.
    """
    torch.manual_seed(seed)
    returned_layers = returned_layers or [1, 2, 3, 4]
    backbone = BackboneWithFPN(_tiny_body(widths, depth, norm_layer),
                               {f"layer{k}": str(i) for i, k in enumerate(returned_layers)},
                               [widths[k - 1] for k in returned_layers], fpn_channels)
    num_levels = len(returned_layers) + 1
    anchors = AnchorGenerator(tuple((s,) for s in (8, 16, 32, 64, 128)[:num_levels]),
                              ((0.5, 1.0, 2.0),) * num_levels)
    return FasterRCNN(
        backbone, None, rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, head_width),
        box_predictor=FastRCNNPredictor(head_width, num_classes),
        min_size=min_size, max_size=min_size, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=30, rpn_batch_size_per_image=32,
        box_batch_size_per_image=16)


def tiny_retinanet(*, num_classes: int = 3, widths: tuple[int, ...] = (8, 16, 32, 64), depth: int = 1,
                   fpn_channels: int = 16, returned_layers: list[int] | None = None,
                   anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128),
                   aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                   norm_layer: type[nn.Module] = FrozenBatchNorm2d, min_size: int = 64,
                   seed: int = 0) -> RetinaNet:
    """A tiny RetinaNet on 64 px inputs: P3-P7 (strides 8..128, P6/P7 from P5), one size per level.

    num_classes counts torchvision's unused background column, as build_detector does.
    """
    torch.manual_seed(seed)
    returned_layers = returned_layers or [2, 3, 4]
    backbone = BackboneWithFPN(_tiny_body(widths, depth, norm_layer),
                               {f"layer{k}": str(i) for i, k in enumerate(returned_layers)},
                               [widths[k - 1] for k in returned_layers], fpn_channels,
                               extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
    num_levels = len(returned_layers) + 2
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes[:num_levels]), (aspect_ratios,) * num_levels)
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, min_size=min_size, max_size=min_size)


def tiny_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two random 64x64 images with one and two GT boxes."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=generator) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [30.0, 5.0, 60.0, 30.0]]),
         "labels": torch.tensor([2, 1])},
    ]
    return images, targets
