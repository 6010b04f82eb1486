"""Per-level 1x1 adapters that map student FPN channels onto the teacher's (METHOD.md section 2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tardistill.errors import ConfigError

# Probe input side: divisible by every stride up to 128, so the strides come out exact.
PROBE_SIZE = 128


class FeatureAdapters(nn.Module):
    """One 1x1 conv per FPN level, student channels -> teacher channels.

    The adapters live on the Distiller and are thrown away after training, so the exported student
    stays a plain torchvision detector.
    """

    def __init__(self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]):
        super().__init__()
        if list(student_channels) != list(teacher_channels):
            raise ValueError(f"adapter levels differ: student {list(student_channels)}, "
                             f"teacher {list(teacher_channels)}")
        self.convs = nn.ModuleDict({
            name: nn.Conv2d(student_channels[name], teacher_channels[name], kernel_size=1)
            for name in student_channels
        })

    @property
    def levels(self) -> list[str]:
        return list(self.convs)

    @torch.no_grad()
    def identity_init(self) -> None:
        """Make every adapter the identity map; only possible where channel counts are equal."""
        for name, conv in self.convs.items():
            if conv.in_channels != conv.out_channels:
                raise ValueError(f"level {name}: identity needs equal channels, got "
                                 f"{conv.in_channels} -> {conv.out_channels}")
            conv.weight.copy_(torch.eye(conv.in_channels)[:, :, None, None])
            conv.bias.zero_()

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Adapt the levels this module knows; other entries of `features` are ignored."""
        return {name: conv(features[name]) for name, conv in self.convs.items()}


def fpn_levels(backbone: nn.Module, *, image_size: int = PROBE_SIZE) -> dict[str, tuple[int, int]]:
    """Probe a backbone with one blank image: level name -> (channels, stride in input pixels)."""
    param = next(backbone.parameters())
    was_training = backbone.training
    # eval() so the probe cannot touch batch-norm running statistics.
    backbone.eval()
    try:
        with torch.no_grad():
            features = backbone(torch.zeros(1, 3, image_size, image_size, device=param.device,
                                            dtype=param.dtype))
    finally:
        backbone.train(was_training)
    if isinstance(features, Tensor):
        features = {"0": features}
    return {name: (f.shape[1], round(image_size / f.shape[-1])) for name, f in features.items()}


# What a TAR user can do about FPN levels that differ; the baselines imitate features only.
TAR_FPN_REMEDY = "set distill.fpn_weight=0 to distill only the detection heads"


def build_fpn_adapters(teacher_backbone: nn.Module, student_backbone: nn.Module, *,
                       remedy: str = TAR_FPN_REMEDY) -> tuple[FeatureAdapters, dict[str, int]]:
    """Adapters for FPN imitation plus the stride of each level; ConfigError if the levels differ.

    Args:
        remedy: the advice that ends the error message.
    """
    teacher_levels, student_levels = fpn_levels(teacher_backbone), fpn_levels(student_backbone)
    teacher_strides = {name: stride for name, (_, stride) in teacher_levels.items()}
    student_strides = {name: stride for name, (_, stride) in student_levels.items()}
    if teacher_strides != student_strides:
        raise ConfigError(
            "distill: FPN imitation needs the same FPN levels and strides in teacher and student; "
            f"teacher has {_describe(teacher_strides)}, student has {_describe(student_strides)}; "
            + remedy)
    adapters = FeatureAdapters({name: c for name, (c, _) in student_levels.items()},
                               {name: c for name, (c, _) in teacher_levels.items()})
    return adapters, teacher_strides


def _describe(strides: Mapping[str, int]) -> str:
    return "levels " + ", ".join(f"{name} (stride {stride})" for name, stride in strides.items())
