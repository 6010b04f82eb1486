"""none: the student trains on its detection losses alone, with no teacher."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs


@dataclass(frozen=True)
class NoDistillation(DistillMethod):
    """No terms and no options; the Distiller then runs no teacher part."""

    name = "none"

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        return {}
