"""torchvision's model-zoo detectors, built without downloads; their weights come from a local file.

The builders run with weights=None and weights_backbone=None, so torchvision never fetches anything.
With weights=None torchvision also builds the model for training from scratch. When the weights
come from a file instead, `prepare_for_pretrained` sets the model up as torchvision does when it
loads the weights itself, so a zoo checkpoint behaves here as it does in torchvision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_Weights, fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2, retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2)
from torchvision.ops.misc import FrozenBatchNorm2d

from tardistill.errors import ConfigError

# torchvision's default for pretrained detectors: the last 3 backbone stages train, the rest is frozen.
PRETRAINED_TRAINABLE_STAGES = 3


@dataclass(frozen=True)
class ZooArchitecture:
    """One torchvision detection builder.

    frozen_batch_norm: torchvision swaps the backbone's batch norm for FrozenBatchNorm2d when it
        loads weights (the v1 models); the v2 models keep trainable batch norm.
    """

    builder: Callable[..., nn.Module]
    kind: str
    backbone_family: str  # resnet | mobilenet: how the frozen early stages are named
    frozen_batch_norm: bool


ZOO_ARCHITECTURES: dict[str, ZooArchitecture] = {
    "fasterrcnn_resnet50_fpn": ZooArchitecture(fasterrcnn_resnet50_fpn, "faster_rcnn", "resnet", True),
    "fasterrcnn_resnet50_fpn_v2": ZooArchitecture(fasterrcnn_resnet50_fpn_v2, "faster_rcnn", "resnet", False),
    "fasterrcnn_mobilenet_v3_large_fpn": ZooArchitecture(fasterrcnn_mobilenet_v3_large_fpn, "faster_rcnn",
                                                         "mobilenet", True),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ZooArchitecture(fasterrcnn_mobilenet_v3_large_320_fpn,
                                                             "faster_rcnn", "mobilenet", True),
    "retinanet_resnet50_fpn": ZooArchitecture(retinanet_resnet50_fpn, "retinanet", "resnet", True),
    "retinanet_resnet50_fpn_v2": ZooArchitecture(retinanet_resnet50_fpn_v2, "retinanet", "resnet", False),
}


def coco_classes() -> list[str]:
    """The class list of torchvision's COCO weights: label i is COCO category id i ('N/A' for unused ids)."""
    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])  # [0] is the background


def zoo_architecture(name: str, kind: str | None = None, *, key: str = "model.architecture"
                     ) -> ZooArchitecture:
    """The builder named `name`; ConfigError if unknown, or if it is not a `kind` detector.

    Args:
        key: the config key that named it, for the error message.
    """
    if name not in ZOO_ARCHITECTURES:
        raise ConfigError(f"{key}: unknown architecture '{name}' "
                          f"(valid: {', '.join(ZOO_ARCHITECTURES)})")
    spec = ZOO_ARCHITECTURES[name]
    if kind is not None and kind != spec.kind:
        raise ConfigError(f"model.kind: {name} is a {spec.kind} detector; set model.kind: {spec.kind}")
    return spec


def build_zoo_detector(name: str, *, num_classes: int, pretrained: bool, **detector_kwargs) -> nn.Module:
    """A zoo detector for `num_classes` object classes (background is added here), never downloading.

    Args:
        pretrained: weights will be loaded from a file; set the model up as torchvision does for
            pretrained weights (see `prepare_for_pretrained`).
        detector_kwargs: FasterRCNN / RetinaNet keyword arguments (image size, proposal counts, ...);
            they replace the builder's own defaults.
    """
    spec = zoo_architecture(name)
    model = spec.builder(weights=None, weights_backbone=None, num_classes=num_classes + 1, **detector_kwargs)
    if pretrained:
        prepare_for_pretrained(model, spec)
    return model


def prepare_for_pretrained(model: nn.Module, spec: ZooArchitecture) -> None:
    """Frozen batch norm (v1 models) and frozen early backbone stages, as torchvision's pretrained models."""
    body = model.backbone.body
    if spec.frozen_batch_norm:
        freeze_batch_norm(body)
    for name, parameter in body.named_parameters():
        if _is_early_stage(name, body, spec.backbone_family):
            parameter.requires_grad_(False)


def freeze_batch_norm(module: nn.Module) -> None:
    """Replace every BatchNorm2d below `module` with FrozenBatchNorm2d, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            # torchvision's default eps (1e-5), not the child's: its pretrained models were built so,
            # even MobileNetV3, whose trainable batch norm uses 1e-3.
            frozen = FrozenBatchNorm2d(child.num_features)
            frozen.to(child.weight.device)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)


def _is_early_stage(parameter_name: str, body: nn.Module, family: str) -> bool:
    """Whether torchvision freezes this backbone parameter for pretrained weights (3 trainable stages)."""
    if family == "resnet":
        trainable = ("layer4", "layer3", "layer2", "layer1", "conv1")[:PRETRAINED_TRAINABLE_STAGES]
        return not parameter_name.startswith(trainable)
    # MobileNet: the stages start at block 0, at each strided block (_is_cn) and at the last block.
    blocks = list(body.children())
    starts = [0] + [i for i, block in enumerate(blocks) if getattr(block, "_is_cn", False)] + [len(blocks) - 1]
    freeze_before = starts[len(starts) - PRETRAINED_TRAINABLE_STAGES]
    return int(parameter_name.split(".", 1)[0]) < freeze_before
