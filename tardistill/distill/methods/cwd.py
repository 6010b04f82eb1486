"""CWD, channel-wise distillation (Shu et al., ICCV 2021): each FPN channel becomes a distribution
over its cells (a softmax with temperature tau), and the student's is pulled to the teacher's by
KL divergence, so the student learns where each channel fires rather than its raw values.

Follows MMRazor's ChannelWiseDivergence: tau^2 * KL summed over cells, averaged over the N * C
channel maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tardistill.distill.losses import masked_channel_kl
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs, check_ranges

# MMRazor's CWD configs on the FPN of Faster R-CNN and RetinaNet (R101 -> R50): tau 1 and
# loss_weight 10 on every level.
CWD_WEIGHT, CWD_TAU = 10.0, 1.0


def cwd_loss(student_feat: Tensor, teacher_feat: Tensor, *, tau: float = CWD_TAU) -> Tensor:
    """CWD on one FPN level: tau^2 * sum KL(p_T || p_S) / (N * C), p = softmax over the H * W cells
    of each channel map divided by tau.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].

    Returns:
        scalar Tensor; 0 when the maps are equal.
    """
    # TAR's channel_softmax unit is this KL under a mask; with no mask (ones) it is CWD's term.
    n, _, h, w = student_feat.shape
    return masked_channel_kl(student_feat, teacher_feat, student_feat.new_ones(n, h, w), tau=tau)


@dataclass(frozen=True)
class CWD(DistillMethod):
    """fpn_weight: the weight of each level's term, summed over levels; tau: the softmax temperature."""

    name = "cwd"
    feature_terms = ("kd/fpn",)

    fpn_weight: float = CWD_WEIGHT
    tau: float = CWD_TAU

    def __post_init__(self) -> None:
        check_ranges(self.name, {"fpn_weight": self.fpn_weight, "tau": self.tau}, positive=("tau",))

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"kd/fpn": self.fpn_weight}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        if not levels:  # fpn_weight 0
            return {}
        return {"kd/fpn": sum(cwd_loss(level.student, level.teacher, tau=self.tau) for level in levels)}
