"""The `cpu` preset's runs in fp32, for a CPU that only emulates bf16 (docs/RESULTS.md, section 5).

    OMP_NUM_THREADS=1 python scripts/cpu_fp32_probe.py OUT KEY_TEXT [KEY_TEXT ...] [--seeds N] [--jobs N]

Runs the preset's plan (seed 0, or seeds 0 to N-1 with --seeds N) with train.amp=off in place of
bf16, into OUT, keeping only the runs whose key contains one of KEY_TEXT (as `bench reproduce
--only`), pretraining and teachers included when named. The records are not comparable number for
number with the bf16 sweep's: compare them with each other. docs/probe_avx2_fp32.json names the
commands that made it.
"""
import argparse
import logging
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("key_text", nargs="+")
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the seeded run groups (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    args = parser.parse_args()
    print(run_sweep(fp32_preset(), args.out, seeds=args.seeds, jobs=args.jobs, only=args.key_text))
