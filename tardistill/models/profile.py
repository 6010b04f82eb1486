"""Measured cost of a detector: CPU latency (parameters live in build.count_parameters)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def cpu_latency_ms(detector: nn.Module, *, image_size: int, batch_size: int = 1, warmup: int = 2,
                   repeats: int = 10) -> float:
    """Median wall time of one inference call on the CPU, in milliseconds (random images)."""
    detector = detector.to("cpu").eval()
    images = [torch.rand(3, image_size, image_size) for _ in range(batch_size)]
    for _ in range(warmup):
        detector(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
