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


@torch.no_grad()
def inference_gflops(detector: nn.Module, *, image_size: int) -> float:
    """GFLOPs of one inference on one image, counted by torch's FlopCounterMode.

    Counts the matrix multiplications and convolutions (what dominates a detector's cost); the
    box decoding and NMS after the heads are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    detector = detector.to("cpu").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        detector([torch.rand(3, image_size, image_size)])
    return counter.get_total_flops() / 1e9


def profile_detector(detector: nn.Module, *, image_size: int) -> dict[str, float]:
    """Parameters, GFLOPs and CPU latency at batch 1 and 8 of one detector."""
    from tardistill.models.build import count_parameters

    return {"params_M": count_parameters(detector) / 1e6,
            "gflops": inference_gflops(detector, image_size=image_size),
            "cpu_ms_batch1": cpu_latency_ms(detector, image_size=image_size, batch_size=1),
            "cpu_ms_batch8": cpu_latency_ms(detector, image_size=image_size, batch_size=8, repeats=5)}
