"""The contract between `fit` and what it trains: a detector's losses, or a distiller's.

`fit` only ever calls what `Trainable` names, so the engine needs to know nothing about teachers,
methods or adapters. `LossModule` is the base that fulfils it with plain-training defaults; a
user's own training loop can call `weighted_total` instead of copying the trainer's weighting.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Trainable(Protocol):
    """An `nn.Module` whose forward(images, targets) returns a flat loss dict, plus these four methods.

    Loss keys are prefixed: det/*, kd/* (weighted and summed) and stat/* (logged, never summed).
    """

    def loss_weights(self, step: int, total_steps: int) -> dict[str, float]:
        """Weight of each loss key at `step` (a missing key weighs 1); stat/* entries are logged."""

    def weighted_total(self, losses: dict[str, Tensor], step: int,
                       total_steps: int) -> tuple[Tensor, dict[str, float]]:
        """The loss to minimise at `step`, and the weights it used."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates."""

    def frozen_state_keys(self) -> set[str]:
        """state_dict keys that never change while training: left out of the training state that
        --resume reloads and of DDP's synchronisation, because whoever builds the module loads them."""


class LossModule(nn.Module):
    """Base of the modules `fit` trains: every loss weighs 1, every parameter trains, nothing is frozen.

    Subclasses implement forward (-> the loss dict) and override what differs.
    """

    def loss_weights(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def weighted_total(self, losses: dict[str, Tensor], step: int,
                       total_steps: int) -> tuple[Tensor, dict[str, float]]:
        """sum of weight * loss over the det/* and kd/* keys, in float32; stat/* are left out."""
        weights = self.loss_weights(step, total_steps)
        total = sum(weights.get(key, 1.0) * value.float() for key, value in losses.items()
                    if not key.startswith("stat/"))
        return total, weights

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def frozen_state_keys(self) -> set[str]:
        return set()
