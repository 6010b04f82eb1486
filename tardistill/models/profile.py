"""Measured cost of a detector: GFLOPs, CPU latency and peak inference memory.

Parameters are counted by build.count_parameters.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable

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


def profile_detector(detector: nn.Module, *, image_size: int, repeats: int = 10) -> dict[str, float]:
    """Parameters, GFLOPs and CPU latency at batch 1 and 8 of one detector."""
    from tardistill.models.build import count_parameters

    return {"params_M": count_parameters(detector) / 1e6,
            "gflops": inference_gflops(detector, image_size=image_size),
            "cpu_ms_batch1": cpu_latency_ms(detector, image_size=image_size, batch_size=1, repeats=repeats),
            "cpu_ms_batch8": cpu_latency_ms(detector, image_size=image_size, batch_size=8,
                                            repeats=max(1, repeats // 2))}


def proc_status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: resident peak) in MiB; Linux only."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field} line")


def _reset_resident_peak() -> None:
    """Set VmHWM back to VmRSS (Linux >= 4.0), so the peak of loading the model is not counted."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


@torch.no_grad()
def _peak_inference_worker(build: Callable[[], nn.Module], image_size: int, batch_size: int, device: str) -> float:
    before_mib = proc_status_mib("VmRSS") if device == "cpu" else 0.0
    detector = build().to(device).eval()
    images = [torch.rand(3, image_size, image_size, device=device) for _ in range(batch_size)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        detector(images)
        return torch.cuda.max_memory_allocated() / 2**20
    _reset_resident_peak()
    detector(images)
    return proc_status_mib("VmHWM") - before_mib


def peak_inference_mib(build: Callable[[], nn.Module], *, image_size: int, batch_size: int = 1,
                       device: str = "cpu") -> float:
    """Peak memory (MiB) of building a detector and running one inference, in a fresh spawned process.

    CPU: the rise of resident memory (VmHWM) over the process before the model existed, so torch's
    own footprint is left out and weights plus activations are counted. CUDA: torch's peak
    allocation. A fresh process per model, as in bench/distill_cost.py, so that one model's freed
    memory, still held by the allocator, cannot hide or inflate another's.

    Args:
        build: picklable (a module-level function or a functools.partial of one), since it is sent
            to the spawned process. Unpickling it imports its module before the baseline is read,
            so a builder from a module that imports what it needs keeps those imports (the
            data and engine modules are some 170 MiB) out of the model's count.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_inference_worker, (build, image_size, batch_size, device))
