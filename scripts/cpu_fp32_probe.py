"""The `cpu` preset's runs in fp32, for a CPU that only emulates bf16 (docs/RESULTS.md, section 5).

    OMP_NUM_THREADS=1 python scripts/cpu_fp32_probe.py OUT KEY_TEXT [KEY_TEXT ...]

Runs the preset's plan (seed 0) with train.amp=off in place of bf16, into OUT, keeping only the
runs whose key contains one of KEY_TEXT (as `bench reproduce --only`), pretraining and teachers
included when named. The records are not comparable number for number with the bf16 sweep's:
compare them with each other. docs/probe_avx2_fp32.json was made with
`... runs/avx2_fp32 pretrain synth-faster_rcnn-teacher synth-faster_rcnn-none-student-s0
synth-faster_rcnn-tar-cls_weightx3`.
"""
import logging
import sys
from dataclasses import replace
from pathlib import Path

from tardistill.bench.presets import PRESETS
from tardistill.bench.reproduce import run_sweep


def fp32_preset():
    cpu = PRESETS["cpu"]
    overrides = {detector: tuple("train.amp=off" if item == "train.amp=bf16" else item for item in items)
                 for detector, items in cpu.overrides.items()}
    return replace(cpu, name="cpu_fp32", overrides=overrides)


if __name__ == "__main__":  # the sweep's workers are spawned and import this file
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(run_sweep(fp32_preset(), Path(sys.argv[1]), seeds=1, jobs=2, only=sys.argv[2:]))
