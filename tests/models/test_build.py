"""build_detector: every backbone and kind builds and trains one step on tiny input."""

import pytest
import torch
from torchvision.models.detection import FasterRCNN, RetinaNet

from tardistill.errors import ConfigError
from tardistill.models.build import build_detector, count_parameters

TARGET = {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])}


@pytest.mark.parametrize("kind, backbone, width, cls", [
    ("faster_rcnn", "resnet18", 0.25, FasterRCNN),
    ("faster_rcnn", "resnet50", 0.125, FasterRCNN),
    ("retinanet", "resnet34", 0.125, RetinaNet),
])
def test_builds_and_returns_losses(kind, backbone, width, cls):
    model = build_detector(kind, backbone, num_classes=3, width_multiplier=width, fpn_channels=32,
                           head_width=64, min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128])
    assert isinstance(model, cls)
    losses = model([torch.rand(3, 64, 64)], [TARGET])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    (output,) = model([torch.rand(3, 64, 64)])
    assert set(output) == {"boxes", "labels", "scores"}


def test_width_multiplier_shrinks_the_model():
    full = build_detector("faster_rcnn", "resnet18", num_classes=3, fpn_channels=32, head_width=64)
    narrow = build_detector("faster_rcnn", "resnet18", num_classes=3, width_multiplier=0.25,
                            fpn_channels=32, head_width=64)
    assert count_parameters(narrow) < count_parameters(full) / 5


def test_mobilenet_has_three_levels():
    model = build_detector("faster_rcnn", "mobilenet_v3_large", num_classes=3, anchor_sizes=[16, 32, 64],
                           head_width=64)
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3, 3, 3]


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.backbone: unknown backbone 'vgg'"):
        build_detector("faster_rcnn", "vgg", num_classes=3)
    with pytest.raises(ConfigError, match="model.kind"):
        build_detector("yolo", "resnet18", num_classes=3)
    with pytest.raises(ConfigError, match="model.anchor_sizes: 2 sizes"):
        build_detector("faster_rcnn", "resnet18", num_classes=3, width_multiplier=0.25, anchor_sizes=[8, 16])


def test_retinanet_p2_p6_levels_and_group_norm_head():
    from tardistill.distill.adapters import fpn_levels

    model = build_detector("retinanet", "resnet18", num_classes=3, width_multiplier=0.125, fpn_channels=64,
                           min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128],
                           retinanet_levels="p2_p6", head_norm="group")
    assert [stride for _, stride in fpn_levels(model.backbone).values()] == [4, 8, 16, 32, 64]
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all(m.num_groups == 32 for m in norms)  # 4 convs in each of the two heads
    losses = model([torch.rand(3, 64, 64)], [TARGET])
    assert all(torch.isfinite(v) for v in losses.values())
    plain = build_detector("retinanet", "resnet18", num_classes=3, width_multiplier=0.125, fpn_channels=32,
                           min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128])
    assert [stride for _, stride in fpn_levels(plain.backbone).values()] == [8, 16, 32, 64, 128]


def test_retinanet_options_are_checked():
    with pytest.raises(ConfigError, match="model.head_norm: applies to RetinaNet only"):
        build_detector("faster_rcnn", "resnet18", num_classes=3, width_multiplier=0.25, head_norm="group")
    with pytest.raises(ConfigError, match="model.retinanet_levels: unknown 'p1'"):
        build_detector("retinanet", "resnet18", num_classes=3, retinanet_levels="p1")
    with pytest.raises(ConfigError, match="divisible by 32, got 48"):
        build_detector("retinanet", "resnet18", num_classes=3, width_multiplier=0.25, fpn_channels=48,
                       anchor_sizes=[8, 16, 32, 64, 128], head_norm="group")


@pytest.mark.parametrize("kind", ["faster_rcnn", "retinanet"])
def test_detections_per_image_reaches_the_detector(kind):
    model = build_detector(kind, "resnet18", num_classes=3, width_multiplier=0.125, fpn_channels=16, head_width=32,
                           min_size=64, max_size=64, detections_per_image=7)
    heads = model if kind == "retinanet" else model.roi_heads
    assert heads.detections_per_img == 7
