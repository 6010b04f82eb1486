"""Optimizer and learning-rate schedule: linear warmup, then multistep or cosine."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from tardistill.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine")


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, *, lr: float, momentum: float = 0.9,
                    weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """SGD with momentum (the detection default) or AdamW."""
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer '{name}' (valid: {', '.join(OPTIMIZERS)})")


def lr_factor(step: int, *, total_steps: int, schedule: str, warmup_steps: int = 0,
              warmup_factor: float = 0.001, milestones: Iterable[float] = (0.75, 0.9),
              gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at `step` (0-based).

    Args:
        milestones: fractions of `total_steps` where the multistep schedule multiplies by `gamma`.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule: unknown schedule '{schedule}' (valid: {', '.join(SCHEDULES)})")
    if schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        factor = gamma ** sum(step >= m * total_steps for m in milestones)
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor
