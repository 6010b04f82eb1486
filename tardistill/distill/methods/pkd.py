"""PKD (Cao et al., NeurIPS 2022): FPN imitation on features standardised per channel, which
amounts to 1 - the Pearson correlation of student and teacher, so the term needs no per-dataset
weight: a feature's scale or offset no longer matters, only its pattern.

Follows MMRazor's PKDLoss: each channel is standardised over the batch and its cells, then the
MSE / 2 of the two standardised maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs, check_ranges

# MMRazor's loss_weight per FPN level: its Faster R-CNN (R101 -> R50) and RetinaNet (X101 -> R50)
# configs. Those list four levels; here every level counts, as for the other methods.
PKD_WEIGHTS = {"faster_rcnn": 6.0, "retinanet": 10.0}
# Added to the standard deviation, as in MMRazor, so that a constant channel maps to 0.
PKD_EPS = 1e-6


def pearson_standardize(features: Tensor) -> Tensor:
    """Each channel shifted to zero mean and scaled to unit (unbiased) deviation over images and cells.

    Args:
        features: Tensor[N, C, H, W].

    Returns:
        Tensor[N, C, H, W].
    """
    mean = features.mean(dim=(0, 2, 3), keepdim=True)
    if features.numel() == features.shape[1]:
        # One value per channel (one image, a 1 x 1 level: MobileNetV3-FPN's pool level at 64 px):
        # the unbiased deviation is nan; the channel is constant, which maps to 0 (kept in the graph).
        return features - mean
    std = features.std(dim=(0, 2, 3), keepdim=True)
    return (features - mean) / (std + PKD_EPS)


def pkd_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """PKD on one FPN level: mean over N, C, H, W of (z(S) - z(T))^2 / 2, z = `pearson_standardize`.

    Per channel this is (1 - r) (n - 1) / n, with r the Pearson correlation of S and T over its
    n = N * H * W values: 0 when S is any positive affine map of T, about 1 when they are unrelated.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].

    Returns:
        scalar Tensor.
    """
    # float32 under autocast: the standardisation divides by a small deviation.
    student = pearson_standardize(student_feat.float())
    teacher = pearson_standardize(teacher_feat.detach().float())
    return F.mse_loss(student, teacher) / 2


@dataclass(frozen=True)
class PKD(DistillMethod):
    """fpn_weight: the weight of each level's term, summed over levels; None takes MMRazor's, 6 for
    Faster R-CNN and 10 for RetinaNet."""

    name = "pkd"
    feature_terms = ("kd/fpn",)

    fpn_weight: float | None = None

    def __post_init__(self) -> None:
        check_ranges(self.name, {"fpn_weight": self.fpn_weight})

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"kd/fpn": PKD_WEIGHTS[kind] if self.fpn_weight is None else self.fpn_weight}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        if not levels:  # fpn_weight 0
            return {}
        return {"kd/fpn": sum(pkd_loss(level.student, level.teacher) for level in levels)}
