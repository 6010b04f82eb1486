"""Does FPN imitation change AP on the deployment pair, a ResNet-50-FPN teacher and a MobileNetV3-FPN student?

Usage: python scripts/fpn_pair_probe.py [OUT_DIR] [SEED]   (default runs/fpn_pair_probe, seed 0)

The two FPNs have different strides (ResNet-50: 4-64; MobileNetV3-FPN: 32, 32, 64), so each
MobileNet level imitates the ResNet level of its stride (docs/METHODS.md). Four runs, each resumed
when it already finished: the student alone, a ResNet-50-FPN teacher, and TAR at its shipped
defaults with and without the FPN term (distill.fpn_weight 1 and 0). Prints one table; docs/RESULTS.md
(section 8) quotes it.

The data: the demo's four distinct shapes on 128 px images, with objects of 28-64 px, because
MobileNetV3-FPN's finest level has stride 32 and torchvision fixes its anchors at 32 px and more;
on the benchmark's 8-px objects it cannot learn. Everything trains from scratch (nothing can be
downloaded here), for a schedule one CPU core affords.
"""

import json
import sys
from pathlib import Path

import numpy as np

from tardistill.config import load_config
from tardistill.data.demo_shapes import DEMO_CLASSES, DEMO_SHAPES
from tardistill.data.synthetic import SPLITS, SceneStyle, render_scene, write_coco_dataset
from tardistill.distill.runs import distill_student
from tardistill.engine.run_log import read_run_log
from tardistill.engine.runs import continue_or_start, train_detector

IMAGE_SIZE = 128
STYLE = SceneStyle(objects=(1, 4), min_extent=28.0, max_extent=0.5, clutter=(0, 3), thin_clutter=(0, 2))
COMMON = ["data.format=coco", f"model.min_size={IMAGE_SIZE}", f"model.max_size={IMAGE_SIZE}",
          "model.rpn_pre_nms_top_n_train=300", "model.rpn_post_nms_top_n_train=150",
          "model.rpn_pre_nms_top_n_test=300", "model.rpn_post_nms_top_n_test=100",
          "model.box_batch_size_per_image=64", "train.batch_size=8", "train.lr=0.02",
          "train.warmup_iterations=100", "train.iterations=800", "train.eval_every=200",
          "train.checkpoint_every=100"]
TEACHER = ["model.backbone=resnet50", "model.fpn_channels=128", "model.head_width=512",
           "model.anchor_sizes=[16,32,64,128,256]"]
STUDENT = ["model.architecture=fasterrcnn_mobilenet_v3_large_fpn"]


def render_probe_image(seed, split, index, *, image_size=IMAGE_SIZE):
    # 70 + split: a random stream apart from the other generated sets
    rng = np.random.default_rng([seed, 70 + SPLITS.index(split), index])
    return render_scene(rng, image_size, DEMO_SHAPES, STYLE)


def main(out: Path, seed: int) -> None:
    data = out / "data"
    if not (data / "annotations" / "test.json").is_file():
        write_coco_dataset(data, render=render_probe_image, classes=DEMO_CLASSES,
                           description="tardistill FPN pair probe", seed=0,
                           counts=dict(zip(SPLITS, (1500, 150, 300))), image_size=IMAGE_SIZE, workers=1)
    teacher = out / "teacher" / "best.safetensors"
    runs = {
        "student alone": (STUDENT + ["distill.method=none"], distill_student, f"student_s{seed}"),
        "teacher (ResNet-50-FPN)": (TEACHER, train_detector, "teacher"),
        "TAR, FPN term on (defaults)": (STUDENT + [f"distill.teacher={teacher}"], distill_student,
                                        f"tar_s{seed}"),
        "TAR, FPN term off (fpn_weight=0)": (STUDENT + [f"distill.teacher={teacher}", "distill.fpn_weight=0"],
                                             distill_student, f"tar_nofpn_s{seed}"),
    }
    rows = {}
    for label, (overrides, runner, folder) in runs.items():
        run_seed = 0 if folder == "teacher" else seed
        config = load_config(None, [*COMMON, *overrides, f"data.root={data}", f"seed={run_seed}",
                                    f"name=fpn_pair_{folder}"])
        result = continue_or_start(config, out / folder, runner)
        curve = [(r["step"], r["AP"]) for r in read_run_log(out / folder / "metrics.jsonl") if r["kind"] == "val"]
        rows[label] = {"test_AP": result["test_metrics"]["AP"], "test_AP50": result["test_metrics"]["AP50"],
                       "val_curve": curve}
        print(json.dumps({label: rows[label]}), flush=True)
    (out / f"summary_s{seed}.json").write_text(json.dumps(rows, indent=2))
    for label, r in rows.items():
        print(f"{label:34s} test AP {100 * r['test_AP']:5.1f}  AP50 {100 * r['test_AP50']:5.1f}  "
              f"val AP by step {[(s, round(100 * ap, 1)) for s, ap in r['val_curve']]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/fpn_pair_probe"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 0)
