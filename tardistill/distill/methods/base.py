"""What a distillation method is: a dataclass of its hyper-parameters that turns one training
forward into its kd/* loss terms.

The Distiller owns everything the methods share: the teacher and student forwards, the FPN
adapters, the decay and the weighting. A method says, in one place, what is its own:
- its hyper-parameters, as dataclass fields with its paper's defaults, checked on construction;
- its loss weights (`loss_weights`) and its default decay (`default_decay`);
- what the forward must compute for it (`feature_terms`, `head_terms`, `level_anchors`);
- the trainable modules it needs besides the adapters (`build_modules`, e.g. FGD's context blocks);
- its loss terms (`terms`), a function of the forward outputs and of its own fields only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tardistill.distill.one_stage import OneStageOutputs
from tardistill.distill.two_stage import TwoStageOutputs
from tardistill.errors import ConfigError

Outputs = TwoStageOutputs | OneStageOutputs
BOTH_KINDS = ("faster_rcnn", "retinanet")


@dataclass(frozen=True)
class FpnLevel:
    """One student FPN level of the shared batch, beside the teacher's map on the same grid.

    The teacher's map is that of the teacher level of the same stride, or of the nearest one
    resampled onto the student's grid (adapters.teacher_on_student_grid), so masks and losses are
    computed on the student level's cells.
    """

    name: str  # the student level's
    student: Tensor  # [N, C, H, W], adapted to the teacher's channels; trains the student and the adapter
    teacher: Tensor  # [N, C, H, W], computed without gradient
    stride: int  # the student level's, input pixels per cell


@dataclass(frozen=True)
class ForwardNeeds:
    """The optional parts of the training forward; the Distiller passes them to the forwards by name."""

    teacher_features: bool = False
    teacher_head: bool = False
    level_anchors: bool = False


@dataclass(frozen=True)
class DistillMethod:
    """Base of every method. A subclass is a frozen dataclass whose fields are its hyper-parameters.

    Class attributes (not fields, so not options):
        name: its key in `registry.METHODS`, used in messages.
        kinds: the detector kinds it distills.
        default_decay: the decay schedule `distill.decay: auto` gives it.
        feature_terms, head_terms: its loss keys that read the teacher's FPN features, and those
            that read the teacher's head outputs; a key weighing 0 computes neither.
        level_anchors: its terms read every anchor, by FPN level (`out.anchors_per_level`).
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = BOTH_KINDS
    default_decay: ClassVar[str] = "constant"
    feature_terms: ClassVar[tuple[str, ...]] = ()
    head_terms: ClassVar[tuple[str, ...]] = ()
    level_anchors: ClassVar[bool] = False

    def loss_weights(self, kind: str) -> dict[str, float]:
        """Loss key -> weight before the decay. kd/* keys are the method's terms; a det/* key here
        replaces that detection loss's weight of 1 (Chen et al. switch torchvision's classifier off)."""
        raise NotImplementedError

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        """The kd/* terms (unweighted) and stat/* rates of one training forward.

        Args:
            out: the forward's outputs; the teacher parts are there when `forward_needs` asked for them.
            levels: every student FPN level, adapted, with the teacher's map on its grid; empty when no
                feature term is active.
            modules: what `build_modules` returned, or None.
        """
        raise NotImplementedError

    def build_modules(self, channels: Mapping[str, int]) -> nn.Module | None:
        """Trainable modules of the method besides the adapters, or None.

        They live on the Distiller, never in the student, and are trained with it.

        Args:
            channels: student FPN level name -> the channels of the teacher level it imitates (the
                adapted student's too).
        """
        return None

    def forward_needs(self, kind: str) -> ForwardNeeds:
        """The teacher parts its active (weight > 0) terms read, and whether they read level anchors."""
        active = {key for key, weight in self.loss_weights(kind).items() if weight > 0}
        return ForwardNeeds(teacher_features=bool(active & set(self.feature_terms)),
                            teacher_head=bool(active & set(self.head_terms)), level_anchors=self.level_anchors)

    @property
    def fpn_remedy(self) -> str:
        """The end of the error for FPN levels that differ between teacher and student."""
        return f"method {self.name} imitates every FPN level, so it cannot run on this pair"


def check_ranges(method: str, values: Mapping[str, float | None], *, positive: tuple[str, ...] = ()) -> None:
    """ConfigError unless every value (None skipped) is >= 0, and > 0 for the names in `positive`.

    Weights may be 0 (the term is off); temperatures and widths divide, so they must be positive.
    """
    for name, value in values.items():
        if value is None:
            continue
        if value < 0 or (value == 0 and name in positive):
            bound = "> 0" if name in positive else ">= 0"
            raise ConfigError(f"distill: method {method}'s {name} must be {bound}, got {value}")
