"""`make demo`: the built-in dataset, a teacher, the student alone and the TAR student, side by side.

Every stage writes its outputs under one folder and is skipped when its result already exists,
so an interrupted demo resumes where it stopped. The demo is sized to finish in about half an hour
on a 2-core CPU; docs/RESULTS.md has the full-size benchmark.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tardistill.config import Config, load_config
from tardistill.data.synthetic import generate_synthetic, synthetic_split_paths
from tardistill.engine.runs import continue_or_start
from tardistill.engine.setup import load_detector
from tardistill.metrics import format_table
from tardistill.models.build import count_parameters
from tardistill.models.profile import cpu_latency_ms
from tardistill.visualize import detection_grid

log = logging.getLogger(__name__)

DATA_SIZES = {"full": dict(num_train=1200, num_val=150, num_test=300),
              "fast": dict(num_train=8, num_val=4, num_test=4, image_size=64)}
ITERATIONS = {"full": 600, "fast": 2}
TEACHER = ["model.backbone=resnet18", "model.fpn_channels=128", "model.head_width=512"]
STUDENT = ["model.backbone=resnet18", "model.width_multiplier=0.25", "model.fpn_channels=64",
           "model.head_width=256"]
COMMON = ["data.format=synth", "model.anchor_sizes=[8,16,32,64,128]", "model.box_batch_size_per_image=128",
          "model.rpn_post_nms_top_n_train=500", "model.rpn_post_nms_top_n_test=300", "train.batch_size=8",
          "train.lr=0.02", "train.warmup_iterations=100"]
FAST = ["model.min_size=64", "model.max_size=64", "train.batch_size=2", "train.warmup_iterations=1"]
STAGES = {"teacher": TEACHER, "student": STUDENT,
          "tar_student": [*STUDENT, "distill.fpn_weight=0.0005"]}


def demo_config(stage: str, out: Path, preset: str) -> Config:
    """The config of one demo stage."""
    iterations = ITERATIONS[preset]
    overrides = [*COMMON, *STAGES[stage], f"data.root={out / 'data'}", f"name=demo_{stage}",
                 f"train.iterations={iterations}", f"train.eval_every={max(iterations // 2, 1)}",
                 f"train.checkpoint_every={max(iterations // 7, 1)}"]
    if stage == "tar_student":
        overrides.append(f"distill.teacher={out / 'teacher' / 'best.safetensors'}")
    return load_config(None, [*overrides, *(FAST if preset == "fast" else [])])


def _run_stage(stage: str, out: Path, preset: str) -> dict[str, Any]:
    from tardistill.distill.runs import distill_student
    from tardistill.engine.runs import train_detector

    run_dir = out / stage
    if (run_dir / "result.json").is_file():
        log.info("demo: %s already done, reusing %s", stage, run_dir)
        return json.loads((run_dir / "result.json").read_text())
    config = demo_config(stage, out, preset)
    runner = distill_student if stage == "tar_student" else train_detector
    return continue_or_start(config, run_dir, runner)


def _summarise(result: dict[str, Any], image_size: int) -> dict[str, float]:
    detector, _ = load_detector(result["checkpoint"])
    return {"AP": result["test_metrics"]["AP"], "AP50": result["test_metrics"]["AP50"],
            "params_M": count_parameters(detector) / 1e6,
            "cpu_ms_batch1": cpu_latency_ms(detector, image_size=image_size), "train_min": result["wall_s"] / 60}


def run_demo(out: Path, *, fast: bool = False) -> dict[str, Any]:
    """Generate data; train teacher, student and TAR student; print a table; save example detections."""
    preset = "fast" if fast else "full"
    if not (out / "data" / "annotations" / "test.json").is_file():
        generate_synthetic(out / "data", seed=0, **DATA_SIZES[preset])
    results = {stage: _run_stage(stage, out, preset) for stage in STAGES}
    image_size = DATA_SIZES[preset].get("image_size", 128)
    rows = {stage: _summarise(result, image_size) for stage, result in results.items()}
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    image_dir, _ = synthetic_split_paths(out / "data", "test")
    detection_grid([r["checkpoint"] for r in results.values()], sorted(image_dir.glob("*.png"))[:4]).save(
        out / "examples.png")
    body = [[stage, f"{100 * r['AP']:.1f}", f"{100 * r['AP50']:.1f}", f"{r['params_M']:.2f}",
             f"{r['cpu_ms_batch1']:.1f}", f"{r['train_min']:.1f}"] for stage, r in rows.items()]
    print(format_table(["model", "AP", "AP50", "params (M)", "CPU ms (batch 1)", "train (min)"], body,
                       title="demo: test split of the built-in dataset (rows top to bottom in examples.png)"))
    print(f"outputs: {out} (summary.json, examples.png, one folder per model)")
    return rows
