"""`make demo`: the built-in dataset, a teacher, a student, their metrics and example detections.

Every stage writes its outputs under one folder and is skipped when its result already exists,
so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from tardistill.config import Config, load_config
from tardistill.data.synthetic import generate_synthetic, synthetic_split_paths
from tardistill.engine.setup import load_detector
from tardistill.metrics import format_metrics_table
from tardistill.models.profile import cpu_latency_ms
from tardistill.models.build import count_parameters
from tardistill.visualize import draw_detections, load_rgb

log = logging.getLogger(__name__)

# Sized so that the whole demo fits in about half an hour on a 2-core CPU.
DATA_SIZES = {"full": dict(num_train=1500, num_val=150, num_test=300), "fast": dict(num_train=16, num_val=8, num_test=8)}
ITERATIONS = {"full": {"teacher": 900, "student": 600}, "fast": {"teacher": 4, "student": 4}}
MODELS = {
    "teacher": ["model.backbone=resnet50", "model.fpn_channels=256", "model.head_width=512"],
    "student": ["model.backbone=resnet18", "model.width_multiplier=0.25", "model.fpn_channels=64",
                "model.head_width=256"],
}
COMMON = ["data.format=synth", "model.anchor_sizes=[8,16,32,64,128]", "model.box_batch_size_per_image=128",
          "model.rpn_post_nms_top_n_train=500", "model.rpn_post_nms_top_n_test=300", "train.batch_size=8",
          "train.warmup_iterations=100"]


def demo_config(role: str, data_root: Path, preset: str) -> Config:
    """The config of one demo model (teacher or student)."""
    iterations = ITERATIONS[preset][role]
    overrides = [*COMMON, *MODELS[role], f"data.root={data_root}", f"name=demo_{role}",
                 f"train.iterations={iterations}", f"train.eval_every={max(iterations // 3, 1)}",
                 f"train.checkpoint_every={max(iterations // 6, 1)}"]
    if preset == "fast":
        overrides += ["train.batch_size=2", "train.warmup_iterations=1"]
    return load_config(None, overrides)


def _train_stage(role: str, data_root: Path, out: Path, preset: str) -> dict[str, Any]:
    from tardistill.commands import _finish_run
    from tardistill.engine.runs import train_detector

    run_dir = out / role
    if (run_dir / "result.json").is_file():
        log.info("demo: %s already trained, reusing %s", role, run_dir)
        return json.loads((run_dir / "result.json").read_text())
    config = demo_config(role, data_root, preset)
    return _finish_run(config, run_dir, train_detector(config, run_dir, resume=True))


def _summarise(role: str, result: dict[str, Any]) -> dict[str, float]:
    detector, _ = load_detector(result["checkpoint"])
    return {"AP": result["test_metrics"]["AP"], "AP50": result["test_metrics"]["AP50"],
            "params_M": count_parameters(detector) / 1e6, "cpu_ms_b1": cpu_latency_ms(detector, image_size=128),
            "train_min": result["wall_s"] / 60}


def _example_grid(results: dict[str, dict], data_root: Path, out_file: Path, count: int = 4) -> None:
    """One row per model, the same test images in each column."""
    image_dir, _ = synthetic_split_paths(data_root, "test")
    images = [load_rgb(p) for p in sorted(image_dir.glob("*.png"))[:count]]
    rows = []
    for role, result in results.items():
        detector, meta = load_detector(result["checkpoint"])
        detector.eval()
        from torchvision.transforms.functional import pil_to_tensor
        outputs = detector([pil_to_tensor(im).float() / 255 for im in images])
        rows.append([draw_detections(im, o, meta["classes"], scale=2) for im, o in zip(images, outputs)])
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * len(images), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            grid.paste(tile, (c * width, r * height))
    grid.save(out_file)


def run_demo(out: Path, *, fast: bool = False) -> dict[str, Any]:
    """Generate data, train teacher and student, print a table, and save example detections."""
    preset = "fast" if fast else "full"
    data_root = out / "data"
    if not (data_root / "annotations" / "test.json").is_file():
        generate_synthetic(data_root, seed=0, **DATA_SIZES[preset])
    results = {role: _train_stage(role, data_root, out, preset) for role in ("teacher", "student")}
    rows = {role: _summarise(role, result) for role, result in results.items()}
    table = format_metrics_table({r: {"AP": v["AP"], "AP50": v["AP50"]} for r, v in rows.items()},
                                 title="demo: test split of the built-in dataset")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    _example_grid(results, data_root, out / "examples.png")
    print(table)
    for role, row in rows.items():
        print(f"{role:8s} params {row['params_M']:.2f}M  CPU latency (batch 1) {row['cpu_ms_b1']:.1f} ms  "
              f"trained in {row['train_min']:.1f} min")
    print(f"outputs: {out} (summary.json, examples.png, one folder per model)")
    return rows
