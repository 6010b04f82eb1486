"""Distillation decay w(t): how much the KD terms weigh at iteration t (METHOD.md section 5)."""

from __future__ import annotations

import math
from typing import Callable

from tardistill.errors import ConfigError


def _linear(progress: float, step_fraction: float, gamma: float) -> float:
    return 1.0 - progress


def _constant(progress: float, step_fraction: float, gamma: float) -> float:
    return 1.0


def _cosine(progress: float, step_fraction: float, gamma: float) -> float:
    return (1.0 + math.cos(math.pi * progress)) / 2.0


def _step(progress: float, step_fraction: float, gamma: float) -> float:
    # "1 before fraction f, 0 after": at exactly f the teacher is already switched off.
    return 1.0 if progress < step_fraction else 0.0


def _exp(progress: float, step_fraction: float, gamma: float) -> float:
    return gamma**progress


DECAYS: dict[str, Callable[[float, float, float], float]] = {
    "linear": _linear,
    "constant": _constant,
    "cosine": _cosine,
    "step": _step,
    "exp": _exp,
}


def check_decay(kind: str) -> None:
    """Raise ConfigError when `kind` is not a known decay, listing the valid ones."""
    if kind not in DECAYS:
        raise ConfigError(f"distill.decay: unknown decay '{kind}' (valid: {', '.join(DECAYS)})")


def decay_weight(kind: str, step: int, total_steps: int, *, step_fraction: float = 0.5,
                 gamma: float = 0.01) -> float:
    """w(t) for `kind` in linear|constant|cosine|step|exp; t / t_max is clamped to [0, 1].

    Args:
        step_fraction: the fraction f of training after which `step` drops to 0.
        gamma: the value `exp` reaches at t = t_max.
    """
    check_decay(kind)
    if total_steps <= 0:
        raise ConfigError(f"distill decay: total_steps must be positive, got {total_steps}")
    progress = min(max(step / total_steps, 0.0), 1.0)
    return float(DECAYS[kind](progress, step_fraction, gamma))
