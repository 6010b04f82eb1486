"""What distillation costs: step time against (student step + teacher inference), and peak memory.

Step times are measured in one process, interleaved, on the same batch, so the machine's load
affects all three alike. Peak memory is measured in a fresh process per mode (CPU: peak RSS; GPU:
torch's peak allocation), so one mode's allocations cannot hide another's.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

import torch

from tardistill.config import Config, config_from_dict, config_to_dict
from tardistill.data.loader import collate_detection
from tardistill.distill.pair import build_distiller, build_pair
from tardistill.engine.schedule import build_optimizer
from tardistill.engine.setup import dataset_for, detector_from_config, select_device, use_bf16
from tardistill.engine.trainer import PrefixedLosses, precision_context
from tardistill.models.profile import proc_status_mib


def _parts(config: Config, device: torch.device, *, with_teacher: bool = True):
    """(teacher, student, distiller, images, targets) as `tardistill distill` builds them (`build_pair`,
    so zoo teachers and class maps work here too).

    Without the teacher, teacher and distiller are None: plain student training.
    """
    torch.manual_seed(config.seed)
    dataset = dataset_for(config.data, config.data.train_split, train=True)
    images, targets = collate_detection([dataset[i] for i in range(config.train.batch_size)])
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) for k, v in t.items() if torch.is_tensor(v)} for t in targets]
    if not with_teacher:
        return None, detector_from_config(config.model, len(dataset.classes)).to(device), None, images, targets
    pair = build_pair(config, list(dataset.classes))
    distiller = build_distiller(pair, config.distill).to(device)
    return pair.teacher, pair.student, distiller, images, targets


def _training_step(model, optimizer, images, targets, precision) -> None:
    with precision:
        losses = model(images, targets)
    total, _ = model.weighted_total(losses, 0, 1)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_step_times(config: Config, *, repeats: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median seconds of a student step, a teacher inference forward and a distillation step."""
    device = select_device(config.train.device)
    teacher, student, distiller, images, targets = _parts(config, device)
    plain = PrefixedLosses(student).train()
    distiller.train()
    plain_opt = build_optimizer(student.parameters(), "sgd", lr=1e-5)
    distill_opt = build_optimizer(distiller.trainable_parameters(), "sgd", lr=1e-5)

    bf16 = use_bf16(config.train.amp, device)
    precision = precision_context(bf16, device)  # as `fit` trains, so the timings are a real run's

    def teacher_forward():
        with torch.no_grad(), precision:
            teacher.eval()(images)

    runs = {"student_step_s": lambda: _training_step(plain, plain_opt, images, targets, precision),
            "teacher_forward_s": teacher_forward,
            "distill_step_s": lambda: _training_step(distiller, distill_opt, images, targets, precision)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(warmup + repeats):
        for name, fn in runs.items():  # interleaved, so drifting machine load hits all three
            elapsed = _timed(fn, device)
            if index >= warmup:
                times[name].append(elapsed)
    result = {name: statistics.median(values) for name, values in times.items()}
    result["ratio"] = result["distill_step_s"] / (result["student_step_s"] + result["teacher_forward_s"])
    return {**result, "batch_size": config.train.batch_size, "device": str(device),
            "bf16": bf16}


def _peak_memory_worker(config_dict: dict[str, Any], mode: str, steps: int) -> float:
    config = config_from_dict(config_dict)
    device = select_device(config.train.device)
    _, student, distiller, images, targets = _parts(config, device, with_teacher=mode == "distill")
    model = PrefixedLosses(student) if distiller is None else distiller
    params = student.parameters() if distiller is None else distiller.trainable_parameters()
    optimizer = build_optimizer(params, "sgd", lr=1e-5)
    model.train()
    precision = precision_context(use_bf16(config.train.amp, device), device)
    for _ in range(steps):
        _training_step(model, optimizer, images, targets, precision)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_mib("VmHWM")  # not ru_maxrss, which carries the parent's peak across fork


def measure_peak_memory(config: Config, *, steps: int = 3) -> dict[str, float]:
    """Peak memory (MiB) of plain student training and of distillation, each in a fresh process."""
    context = multiprocessing.get_context("spawn")
    result = {}
    for mode in ("student", "distill"):
        with context.Pool(1) as pool:
            result[f"{mode}_peak_mib"] = pool.apply(_peak_memory_worker, (config_to_dict(config), mode, steps))
    result["ratio"] = result["distill_peak_mib"] / result["student_peak_mib"]
    return result
