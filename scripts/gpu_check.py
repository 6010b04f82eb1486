"""One short check of the GPU path: the `gpu` preset's runs at a few hundred iterations, bf16 against fp32.

Not a benchmark of accuracy: it shows that the gpu preset's teacher (ResNet-101-FPN), student
(ResNet-50-FPN) and TAR run end to end on CUDA through the sweep's own code (`execute_run`, bf16 from
`train.amp=auto`), how fast they train, and what distillation costs in step time and memory in bf16
and in fp32. From the iteration rates it estimates the whole gpu sweep's time.

    python scripts/gpu_check.py --out /tmp/gpu_check [--iterations 200]

Writes OUT/gpu_check.json (rewritten after every stage, so a cut-short check keeps what it measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from tardistill.bench.distill_cost import measure_peak_memory, measure_step_times
from tardistill.bench.plan import PRETRAIN, RunSpec, plan_runs
from tardistill.bench.presets import get_preset
from tardistill.bench.reproduce import execute_run, run_config
from tardistill.data.generated import generate_dataset


def small_gpu_preset(iterations: int, num_train: int):
    """The gpu preset on one small synth set, without pretraining, at `iterations` per run."""
    preset = get_preset("gpu")
    sizes = dict(preset.datasets["synth"], num_train=num_train, num_val=100, num_test=100)
    return dataclasses.replace(preset, datasets={"synth": sizes}, pretrain={},
                               teacher_iterations={k: iterations for k in preset.teacher_iterations},
                               student_iterations={k: iterations for k in preset.student_iterations})


def estimated_sweep_hours(rates: dict[str, float], out: Path) -> float:
    """What the whole gpu sweep would take at `rates` (seconds per iteration of the teacher, the
    student alone and TAR), each planned run at its own schedule (run_config's). Pretraining counts
    at its architecture's rate, distillation by any method at TAR's, RetinaNet at Faster R-CNN's:
    an estimate, not a measurement."""
    full = get_preset("gpu")

    def rate(spec: RunSpec) -> float:
        if spec.method == PRETRAIN:
            return rates[spec.variant]
        return rates["teacher" if spec.role == "teacher" else "student" if spec.method == "none" else "tar"]

    return sum(run_config(spec, full, out).train.iterations * rate(spec) for spec in plan_runs(full, 3)) / 3600


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--loader-steps", type=int, default=100)
    parser.add_argument("--stages", default="runs,cost,loader",
                        help="runs (teacher, student, TAR), teacher (the teacher alone), cost, loader")
    args = parser.parse_args()
    stages = args.stages.split(",")
    out = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "torch": torch.__version__, "iterations": args.iterations, "runs": {}, "cost": {}}
    report_path = out / "gpu_check.json"

    def save() -> None:
        report_path.write_text(json.dumps(report, indent=1))

    preset = small_gpu_preset(args.iterations, args.num_train)
    started = time.perf_counter()
    generate_dataset("synth", out / "data" / "synth", seed=0, workers=8, **preset.datasets["synth"])
    report["data_s"] = round(time.perf_counter() - started, 1)
    save()

    specs = [RunSpec("faster_rcnn", "teacher", "default", 0, "reference"),
             RunSpec("faster_rcnn", "none", "student", 0, "main"),
             RunSpec("faster_rcnn", "tar", "full", 0, "main")]
    if "runs" in stages or "teacher" in stages:
        for spec in specs if "runs" in stages else specs[:1]:
            started = time.perf_counter()
            record = execute_run(spec, preset, out)
            report["runs"][spec.key] = {"wall_s": record["wall_s"], "outer_s": round(time.perf_counter() - started, 1),
                                        "ap": record["ap"], "machine": record["machine"],
                                        "iterations": record["iterations"]}
            save()

    if "loader" in stages:
        # Seconds per iteration of the student alone with the images loaded in the training process
        # (data.num_workers 0, the default) and by 8 worker processes.
        from tardistill.engine.runs import train_detector

        student = run_config(specs[1], preset, out)
        steps = args.loader_steps
        for workers in (0, 8):
            config = dataclasses.replace(student, data=dataclasses.replace(student.data, num_workers=workers),
                                         train=dataclasses.replace(student.train, iterations=steps, eval_every=steps,
                                                                   checkpoint_every=steps))
            result = train_detector(config, out / "runs" / f"loader-{workers}")
            report["loader"] = {**report.get("loader", {}), f"workers_{workers}_s_per_iteration": result["wall_s"] / steps}
            save()

    if "cost" in stages:
        tar_config = run_config(specs[2], preset, out)
        for amp in ("off", "bf16"):
            config = dataclasses.replace(tar_config, train=dataclasses.replace(tar_config.train, amp=amp))
            report["cost"][amp] = {"steps": measure_step_times(config, repeats=10, warmup=3),
                                   "peak_mib": measure_peak_memory(config)}
            save()

    seconds_per_iteration = {key: run["wall_s"] / run["iterations"] for key, run in report["runs"].items()}
    if len(seconds_per_iteration) == 3:
        rates = dict(zip(("teacher", "student", "tar"), (seconds_per_iteration[s.key] for s in specs)))
        report["estimated_full_gpu_sweep_h"] = round(estimated_sweep_hours(rates, out), 1)
        save()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
