"""Per-level 1x1 adapters that map student FPN channels onto the teacher's (METHOD.md section 2), and
the matching of each student FPN level to the teacher level it imitates (docs/METHODS.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Probe input side: divisible by every stride up to 128, so the strides come out exact.
PROBE_SIZE = 128


@dataclass(frozen=True)
class LevelMatch:
    """The teacher level a student FPN level imitates, and how its map reaches the student's grid."""

    teacher: str  # the teacher level's name
    stride: int  # the student level's: the grid of the mask and the loss
    teacher_stride: int

    @property
    def resampling(self) -> str:
        """same (equal strides) | pool (a finer teacher level, averaged) | bilinear (any other)."""
        if self.teacher_stride == self.stride:
            return "same"
        return "pool" if self.stride % self.teacher_stride == 0 else "bilinear"


def match_levels(teacher_strides: Mapping[str, int], student_strides: Mapping[str, int]
                 ) -> dict[str, LevelMatch]:
    """Student level name -> the teacher level it imitates.

    In order of preference: the teacher level of the same name and stride; the first teacher level
    of the same stride (both of MobileNetV3-FPN's stride-32 levels take R50's '3'); the coarsest
    teacher level whose stride divides the student's, averaged onto its grid; else the teacher level
    nearest in stride, interpolated.
    """
    return {name: _match_one(name, stride, teacher_strides) for name, stride in student_strides.items()}


def _match_one(name: str, stride: int, teacher_strides: Mapping[str, int]) -> LevelMatch:
    if teacher_strides.get(name) == stride:
        return LevelMatch(name, stride, stride)
    same = [t_name for t_name, t_stride in teacher_strides.items() if t_stride == stride]
    if same:
        return LevelMatch(same[0], stride, stride)
    # Pooling needs a finer level whose cells tile the student's exactly; the nearest loses least.
    finer = {t_name: t_stride for t_name, t_stride in teacher_strides.items() if stride % t_stride == 0}
    candidates = finer or teacher_strides
    t_name = min(candidates, key=lambda n: (abs(math.log(candidates[n] / stride)), -candidates[n]))
    return LevelMatch(t_name, stride, teacher_strides[t_name])


def teacher_on_student_grid(teacher_feat: Tensor, match: LevelMatch, size: tuple[int, int]) -> Tensor:
    """The teacher level's map on the student level's grid, cells aligned at the image's top left.

    A finer teacher level is averaged over the k x k cells that make up each student cell (k =
    stride ratio): every student cell then sees the mean of the teacher's features over its own
    footprint, and nothing aliases. Bilinear interpolation is used only where averaging cannot
    work, a coarser teacher level (or a ratio that is not whole); it samples the teacher's map at the
    student's cell centres. The result is cropped to `size`: a padded batch's coarse levels round up,
    so the teacher's map may reach a row or column past the student's.

    Args:
        teacher_feat: Tensor[N, C, h, w] at `match.teacher_stride`.
        size: (H, W) of the student level.

    Returns:
        Tensor[N, C, H', W'] at `match.stride`, H' <= H and W' <= W; `teacher_feat` itself when the
        strides are equal.
    """
    if match.resampling == "same":
        return teacher_feat
    if match.resampling == "pool":
        ratio = match.stride // match.teacher_stride
        # ceil_mode: a partial cell at the edge averages the teacher cells it has.
        resampled = F.avg_pool2d(teacher_feat, ratio, ratio, ceil_mode=True)
    else:
        # recompute_scale_factor=False: the cell centres map by the stride ratio, not by the sizes.
        resampled = F.interpolate(teacher_feat, scale_factor=match.teacher_stride / match.stride,
                                  mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return resampled[..., :size[0], :size[1]]


class FeatureAdapters(nn.Module):
    """One 1x1 conv per student FPN level, student channels -> those of the teacher level it imitates.

    The adapters live on the Distiller and are thrown away after training, so the exported student
    stays a plain torchvision detector.
    """

    def __init__(self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]):
        """Args: student_channels, teacher_channels: by student level name (the teacher's of its match)."""
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


# What a TAR user can do about FPN levels that do not line up; the baselines imitate features only.
TAR_FPN_REMEDY = "set distill.fpn_weight=0 to distill only the detection heads"


def build_fpn_adapters(teacher_backbone: nn.Module, student_backbone: nn.Module
                       ) -> tuple[FeatureAdapters, dict[str, LevelMatch]]:
    """Adapters for FPN imitation, one per student level, and the teacher level each one imitates."""
    teacher_levels, student_levels = fpn_levels(teacher_backbone), fpn_levels(student_backbone)
    matches = match_levels({name: stride for name, (_, stride) in teacher_levels.items()},
                           {name: stride for name, (_, stride) in student_levels.items()})
    adapters = FeatureAdapters({name: c for name, (c, _) in student_levels.items()},
                               {name: teacher_levels[match.teacher][0] for name, match in matches.items()})
    return adapters, matches
