"""FGD, focal and global knowledge distillation (Yang et al., CVPR 2022; METHOD.md, "Baselines").

Focal imitation under foreground and background masks weighted by the teacher's attention, an
attention term, and a global term through GcBlocks (global_context.py) that train with the student.
The masks are in baseline_masks.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from tardistill.distill.baseline_masks import fgd_batch_masks
from tardistill.distill.global_context import build_context_blocks
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs, check_ranges

# FGD's two-stage (Faster R-CNN) weights and attention temperature, from the official configs.
FGD_ALPHA, FGD_BETA, FGD_GAMMA, FGD_LAMBDA = 5e-5, 2.5e-5, 5e-5, 5e-7
FGD_TEMPERATURE = 0.5
FGD_TERMS = ("kd/fgd_focal", "kd/fgd_attention", "kd/fgd_global")


def fgd_attention(feat: Tensor, *, temperature: float = FGD_TEMPERATURE) -> tuple[Tensor, Tensor]:
    """FGD's spatial and channel attention of a feature map.

    A_S = H * W * softmax over cells of (mean over channels of |F|) / T;
    A_C = C * softmax over channels of (mean over cells of |F|) / T. Each averages to 1.

    Args:
        feat: Tensor[N, C, H, W]; not detached, since the student's attention is trained too.

    Returns:
        (spatial Tensor[N, H, W], channel Tensor[N, C]).
    """
    n, c, h, w = feat.shape
    magnitude = feat.float().abs()
    spatial = magnitude.mean(dim=1).reshape(n, -1).div(temperature).softmax(dim=1)
    channel = magnitude.mean(dim=(2, 3)).div(temperature).softmax(dim=1)
    return (h * w * spatial).reshape(n, h, w), c * channel


def fgd_focal_loss(student_feat: Tensor, teacher_feat: Tensor, fg_mask: Tensor, bg_mask: Tensor,
                   spatial_att: Tensor, channel_att: Tensor, *, alpha: float = FGD_ALPHA,
                   beta: float = FGD_BETA) -> Tensor:
    """FGD's focal distillation: attention-weighted squared error on foreground and background.

    alpha * sum fg * A_S * A_C * (S - T)^2 + beta * sum bg * A_S * A_C * (S - T)^2, summed over
    channels, cells and images and divided by the batch size N (official code; the paper writes the
    per-image sum). A_S and A_C are the teacher's, for both parts, as in the official code.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        fg_mask, bg_mask: Tensor[N, H, W] from `fgd_batch_masks`.
        spatial_att: Tensor[N, H, W]; channel_att: Tensor[N, C]; the teacher's `fgd_attention`.

    Returns:
        scalar Tensor, already weighted by alpha and beta.
    """
    squared = (student_feat.float() - teacher_feat.detach().float()).pow(2)
    attention = spatial_att.detach()[:, None] * channel_att.detach()[:, :, None, None]
    weighted = (squared * attention).sum(dim=1)  # [N, H, W]
    fg_loss = (weighted * fg_mask.to(weighted)).sum()
    bg_loss = (weighted * bg_mask.to(weighted)).sum()
    return (alpha * fg_loss + beta * bg_loss) / student_feat.shape[0]


def fgd_attention_loss(student_spatial: Tensor, student_channel: Tensor, teacher_spatial: Tensor,
                       teacher_channel: Tensor, *, gamma: float = FGD_GAMMA) -> Tensor:
    """FGD's attention loss: gamma * (L1(A_S student, teacher) + L1(A_C student, teacher)), summed,
    divided by the batch size N (official code).

    Args:
        student_spatial, teacher_spatial: Tensor[N, H, W]; student_channel, teacher_channel:
            Tensor[N, C]; from `fgd_attention` of the adapted student and of the teacher.

    Returns:
        scalar Tensor, already weighted by gamma.
    """
    spatial = (student_spatial.float() - teacher_spatial.detach().float()).abs().sum()
    channel = (student_channel.float() - teacher_channel.detach().float()).abs().sum()
    return gamma * (spatial + channel) / student_spatial.shape[0]


def fgd_global_loss(student_feat: Tensor, teacher_feat: Tensor, student_context: Tensor,
                    teacher_context: Tensor, *, lam: float = FGD_LAMBDA) -> Tensor:
    """FGD's global distillation: lam * sum (R(S) - R(T))^2 / N, with R(F) = F + context(F).

    The teacher's features are detached but `teacher_context` is not: in the official code the
    teacher-side GcBlock is a trainable part of the loss, updated together with the student's.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        student_context, teacher_context: Tensor[N, C, 1, 1], the output of each side's
            `GlobalContextBlock` on student_feat and teacher_feat.

    Returns:
        scalar Tensor, already weighted by lam.
    """
    student_global = student_feat.float() + student_context.float()
    teacher_global = teacher_feat.detach().float() + teacher_context.float()
    return lam * (student_global - teacher_global).pow(2).sum() / student_feat.shape[0]


@dataclass(frozen=True)
class FGD(DistillMethod):
    """The official two-stage configs' values. alpha, beta: the focal term's foreground and
    background weights; gamma: the attention term's; lam: the global term's; temperature: the
    attention softmax's. They are applied inside the losses, so the loss keys themselves weigh 1."""

    name = "fgd"
    feature_terms = FGD_TERMS

    alpha: float = FGD_ALPHA
    beta: float = FGD_BETA
    gamma: float = FGD_GAMMA
    lam: float = FGD_LAMBDA
    temperature: float = FGD_TEMPERATURE

    def __post_init__(self) -> None:
        check_ranges(self.name, {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "lam": self.lam,
                                 "temperature": self.temperature}, positive=("temperature",))

    def loss_weights(self, kind: str) -> dict[str, float]:
        return dict.fromkeys(FGD_TERMS, 1.0)

    def build_modules(self, channels: Mapping[str, int]) -> nn.Module:
        """One GcBlock per level for each side: `modules["student"][level]`, `modules["teacher"][level]`."""
        return build_context_blocks(channels)

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        """The three terms, each summed over levels."""
        totals: dict[str, Tensor] = {}
        for level in levels:
            for key, value in self._level_terms(out.gt_boxes, level, modules).items():
                totals[key] = totals[key] + value if key in totals else value
        return totals

    def _level_terms(self, gt_boxes: list[Tensor], level: FpnLevel, blocks: nn.Module) -> dict[str, Tensor]:
        student_feat, teacher_feat = level.student, level.teacher
        height, width = student_feat.shape[-2:]  # the teacher map is on the same grid
        fg, bg = fgd_batch_masks(gt_boxes, height=height, width=width, stride=level.stride)
        # The student's attention is computed on its adapted features, so the attention term trains it.
        s_spatial, s_channel = fgd_attention(student_feat, temperature=self.temperature)
        t_spatial, t_channel = fgd_attention(teacher_feat.detach(), temperature=self.temperature)
        return {
            "kd/fgd_focal": fgd_focal_loss(student_feat, teacher_feat, fg, bg, t_spatial, t_channel,
                                           alpha=self.alpha, beta=self.beta),
            "kd/fgd_attention": fgd_attention_loss(s_spatial, s_channel, t_spatial, t_channel, gamma=self.gamma),
            "kd/fgd_global": fgd_global_loss(student_feat, teacher_feat, blocks["student"][level.name](student_feat),
                                             blocks["teacher"][level.name](teacher_feat), lam=self.lam),
        }
