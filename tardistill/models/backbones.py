"""Backbones with FPN: torchvision ResNets (optionally narrowed) and MobileNetV3-Large."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from tardistill.errors import ConfigError

RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}
BACKBONE_NAMES = (*RESNET_LAYOUTS, "mobilenet_v3_large")


class NarrowResNet(ResNet):
    """torchvision's ResNet with every stage's width scaled by `width_multiplier`.

    Parameter names are torchvision's, so width 1.0 loads torchvision ImageNet weights.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], *, width_multiplier: float = 1.0,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        nn.Module.__init__(self)
        base = max(8, int(round(64 * width_multiplier)))
        self._norm_layer = norm_layer
        self.inplanes, self.dilation, self.groups, self.base_width = base, 1, 1, 64
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.stage_channels = [base * 2**i * block.expansion for i in range(4)]


def build_resnet_fpn(name: str, *, width_multiplier: float, fpn_channels: int,
                     returned_layers: list[int], extra_blocks: ExtraFPNBlock) -> BackboneWithFPN:
    """A (narrow) ResNet body with an FPN over the returned stages (1..4 = C2..C5)."""
    block, layers = RESNET_LAYOUTS[name]
    body = NarrowResNet(block, layers, width_multiplier=width_multiplier)
    in_channels = [body.stage_channels[i - 1] for i in returned_layers]
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned_layers)}
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=extra_blocks)


def build_fpn_backbone(name: str, *, kind: str, width_multiplier: float = 1.0, fpn_channels: int = 256,
                       retinanet_levels: str = "p3_p7") -> BackboneWithFPN:
    """The FPN backbone a detector kind expects: P2-P6 for Faster R-CNN, P3-P7 for RetinaNet (or
    P2-P6 as Faster R-CNN's, P6 pooled from P5, when retinanet_levels is p2_p6)."""
    if name not in BACKBONE_NAMES:
        raise ConfigError(f"model.backbone: unknown backbone '{name}' (valid: {', '.join(BACKBONE_NAMES)})")
    if name == "mobilenet_v3_large":
        if kind == "retinanet" and retinanet_levels != "p3_p7":
            raise ConfigError("model.retinanet_levels: the MobileNetV3 FPN has P3-P7 levels only")
        if width_multiplier != 1.0:
            raise ConfigError("model.width_multiplier: only ResNet backbones can be narrowed")
        extra = LastLevelP6P7(fpn_channels, fpn_channels) if kind == "retinanet" else LastLevelMaxPool()
        backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None), True, 6, extra_blocks=extra)
        if fpn_channels != backbone.out_channels:
            raise ConfigError("model.fpn_channels: torchvision's MobileNetV3 FPN has 256 channels")
        return backbone
    if kind == "retinanet" and retinanet_levels == "p2_p6":
        return build_resnet_fpn(name, width_multiplier=width_multiplier, fpn_channels=fpn_channels,
                                returned_layers=[1, 2, 3, 4], extra_blocks=LastLevelMaxPool())
    if kind == "retinanet":
        return build_resnet_fpn(name, width_multiplier=width_multiplier, fpn_channels=fpn_channels,
                                returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
    return build_resnet_fpn(name, width_multiplier=width_multiplier, fpn_channels=fpn_channels,
                            returned_layers=[1, 2, 3, 4], extra_blocks=LastLevelMaxPool())
