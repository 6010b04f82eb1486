"""FitNet-style hints (Romero et al., ICLR 2015) on every FPN level: the unmasked baseline to TAR's
Gaussian mask (METHOD.md, "Baselines")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tardistill.distill.losses import fpn_imitation_loss
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs, check_ranges


def fitnet_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNet-style hint on one FPN level: TAR's `fpn_imitation_loss` with a mask of ones.

    Per image: sum over cells and channels of (S - T)^2 / (2 * H * W), then the mean over images.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].

    Returns:
        scalar Tensor.
    """
    ones = student_feat.new_ones(student_feat.shape[0], *student_feat.shape[-2:])
    return fpn_imitation_loss(student_feat, teacher_feat, ones, norm="sum")


@dataclass(frozen=True)
class FitNet(DistillMethod):
    """fpn_weight: the hint's weight; 1, the plain hint of the paper's hint stage. The levels are
    summed, in the paper's units (norm="sum")."""

    name = "fitnet"
    feature_terms = ("kd/fpn",)

    fpn_weight: float = 1.0

    def __post_init__(self) -> None:
        check_ranges(self.name, {"fpn_weight": self.fpn_weight})

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"kd/fpn": self.fpn_weight}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        if not levels:  # fpn_weight 0
            return {}
        return {"kd/fpn": sum(fitnet_loss(level.student, level.teacher) for level in levels)}
