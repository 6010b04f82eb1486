"""FGFI, fine-grained feature imitation (Wang et al., CVPR 2019): imitation on the FPN cells whose
anchors come close to a GT box (METHOD.md, "Baselines"). The mask is in baseline_masks.py."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tardistill.distill.baseline_masks import FGFI_PSI, fgfi_masks
from tardistill.distill.losses import fpn_imitation_loss
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs, check_ranges


def fgfi_loss(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor) -> Tensor:
    """FGFI imitation on one FPN level: sum I * ||A(S) - T||^2 / (2 * sum I), per image, then mean.

    TAR's masked loss with FGFI's binary mask. The official FGFI code normalises by the mask summed
    over the whole batch instead of per image; the two agree when every image has the same mask area.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        mask: Tensor[N, H, W] of 0 / 1 from `fgfi_masks`.

    Returns:
        scalar Tensor.
    """
    return fpn_imitation_loss(student_feat, teacher_feat, mask, norm="sum")


@dataclass(frozen=True)
class FGFI(DistillMethod):
    """fpn_weight: 0.01, the official code's imitation_loss_weight. psi: a cell imitates when one of
    its anchors reaches psi times a GT's best anchor IoU."""

    name = "fgfi"
    feature_terms = ("kd/fpn",)
    level_anchors = True

    fpn_weight: float = 0.01
    psi: float = FGFI_PSI

    def __post_init__(self) -> None:
        check_ranges(self.name, {"fpn_weight": self.fpn_weight, "psi": self.psi})

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"kd/fpn": self.fpn_weight}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        """The imitation summed over levels, each on its own anchors' mask."""
        if not levels:  # fpn_weight 0
            return {}
        shapes = [tuple(level.student.shape[-2:]) for level in levels]
        anchors = out.anchors_per_level
        per_location = [a.shape[0] // (h * w) for a, (h, w) in zip(anchors, shapes)]
        masks = fgfi_masks(anchors, out.gt_boxes, level_shapes=shapes, num_anchors_per_location=per_location,
                           psi=self.psi)
        return {"kd/fpn": sum(fgfi_loss(level.student, level.teacher, mask) for level, mask in zip(levels, masks))}
