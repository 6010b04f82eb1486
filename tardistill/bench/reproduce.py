"""`tardistill bench reproduce`: every run of the paper's ablation and the method comparison, resumable.

Layout under OUT:
    data/<dataset>/       each dataset of the preset at its scale (generated once)
    runs/<key>/           one training run each (checkpoints, metrics.jsonl, result.json)
    records/<key>.json    one result record per finished run; a re-run skips these
    logs/<key>.log        each run's log
A run cut short resumes from its last checkpoint. A run that fails is reported and skipped; the
others go on, and the next invocation retries it. A run whose saved config.yaml differs from what the
plan now asks for, in a setting the run uses (a preset, plan or default that changed), is stale: its
folder and record move to OUT/stale/<key>-<time>/ (kept, not deleted) and it runs again. A
retrained teacher does not make its students stale by itself: move their records away to rerun them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tardistill.bench.plan import PRETRAIN, RunSpec, plan_runs, planned_baselines, pretrain_spec
from tardistill.bench.presets import Preset
from tardistill.bench.summary import best_seed0_baselines
from tardistill.config import Config, config_to_dict, load_config
from tardistill.distill.methods.tar import TAR
from tardistill.distill.pair import idle_tar_keys
from tardistill.strict_json import without_nonfinite, write_json

log = logging.getLogger(__name__)


DATA_FORMATS = {"synth": "synth", "digits": "coco", "shapes": "coco"}


def run_config(spec: RunSpec, preset: Preset, out: Path) -> Config:
    """The full config of one detection run."""
    arch = preset.teacher if spec.role == "teacher" else preset.student
    if spec.method == PRETRAIN:
        arch, iterations = (preset.teacher if spec.variant == "teacher" else preset.student), preset.pretrain[spec.variant]
    else:
        iterations = (preset.teacher_iterations if spec.role == "teacher" else preset.student_iterations)[spec.detector]
    overrides = [f"data.format={DATA_FORMATS[spec.dataset]}", f"data.root={out / 'data' / spec.dataset}",
                 f"name={spec.key}", f"seed={spec.seed}", *preset.overrides[spec.detector], *arch[spec.detector],
                 f"train.iterations={iterations}", f"train.eval_every={max(iterations // 8, 1)}",
                 f"train.checkpoint_every={max(iterations // 10, 1)}", "train.log_every=20"]
    if spec.method == PRETRAIN:
        overrides += preset.pretrain_overrides
    elif spec.role in preset.pretrain:
        overrides.append(f"model.backbone_weights={pretrained_path(spec.role, out)}")
    init_key = spec.init_key(preset)
    if init_key:
        overrides.append(f"model.weights={out / 'runs' / init_key / 'best.safetensors'}")
    if spec.role == "student":
        overrides.append(f"distill.method={spec.method}")
    if spec.method == "tar":
        overrides += [*preset.tar, *spec.overrides]
    if spec.needs_teacher:
        overrides.append(f"distill.teacher={out / 'runs' / spec.teacher_key / 'best.safetensors'}")
    return load_config(None, overrides)


def pretrained_path(role: str, out: Path) -> Path:
    """The weights that `role` (teacher | student) starts from: its pretraining run's best checkpoint,
    of which `model.backbone_weights` loads the backbone body only."""
    return out / "runs" / pretrain_spec(role).key / "best.safetensors"


def record_path(out: Path, key: str) -> Path:
    return out / "records" / f"{key}.json"


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, without_nonfinite(data)[0])


def _val_curve(run_dir: Path) -> list[list[float]]:
    from tardistill.engine.run_log import read_run_log

    return [[r["step"], r["AP"]] for r in read_run_log(run_dir / "metrics.jsonl") if r["kind"] == "val"]


def execute_run(spec: RunSpec, preset: Preset, out: Path) -> dict[str, Any]:
    """Train, evaluate and record one run (in a worker process); returns its record."""
    import torch

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_at_start = os.getloadavg()[0]
    if preset.threads:
        torch.set_num_threads(preset.threads)
    handler = logging.FileHandler(out / "logs" / f"{spec.key}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        record = _train(spec, preset, out)
    finally:
        root.removeHandler(handler)
        handler.close()
    record.update({"detector": spec.detector, "method": spec.method, "variant": spec.variant,
                   "seed": spec.seed, "group": spec.group, "key": spec.key, "dataset": spec.dataset,
                   "preset": preset.name, "threads": torch.get_num_threads(), "machine": machine_description(),
                   # the 1-minute load average: above the sweep's own runs, other work shared the cores
                   "load_avg": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
                   "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    _write_json_atomic(record_path(out, spec.key), record)
    return record


def _train(spec: RunSpec, preset: Preset, out: Path) -> dict[str, Any]:
    from tardistill.distill.runs import distill_student
    from tardistill.engine.runs import continue_or_start, train_detector

    run_dir = out / "runs" / spec.key
    config = run_config(spec, preset, out)
    runner = train_detector if spec.role == "teacher" or spec.method == PRETRAIN else distill_student
    result = continue_or_start(config, run_dir, runner)
    return {"ap": result["test_metrics"]["AP"], "ap50": result["test_metrics"]["AP50"],
            "test_metrics": result["test_metrics"], "iterations": config.train.iterations,
            "wall_s": result["wall_s"], "best_step": result.get("best_step"),
            "parameters": result["parameters"], "val_curve": _val_curve(run_dir)}


def _execute_safely(spec: RunSpec, preset: Preset, out: Path) -> dict[str, Any]:
    try:
        return execute_run(spec, preset, out)
    except Exception:  # one failed run must not end the sweep; it is reported and retried next time
        return {"error": traceback.format_exc()}


def machine_description() -> str:
    """A short description of the machine, written beside every number."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every finished run's record under OUT/records."""
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def best_baselines(preset: Preset, records: list[dict[str, Any]]) -> dict[str, str]:
    """dataset -> its best baseline at seed 0, where all of them have finished (summary.best_seed0_baselines)."""
    return best_seed0_baselines(records, list(preset.datasets), planned_baselines(preset))


def sweep_plan(preset: Preset, seeds: int, records: list[dict[str, Any]]) -> list[RunSpec]:
    """The preset's runs (plan_runs), with the best baselines chosen from `records`."""
    return plan_runs(preset, seeds, best_baselines(preset, records))


def ensure_data(preset: Preset, out: Path) -> None:
    """Generate each dataset of the preset under OUT/data/<name>, unless it is there already."""
    from tardistill.data.generated import generate_dataset

    datasets = {**preset.datasets, **({"shapes": preset.data} if preset.pretrain else {})}
    for name, sizes in datasets.items():
        root = out / "data" / name
        if not (root / "annotations" / "test.json").is_file():
            log.info("bench reproduce: writing the %s dataset to %s", name, root)
            # Before any run starts, so every core writes; the files do not depend on the worker count.
            generate_dataset(name, root, seed=0, workers=os.cpu_count() or 1, **sizes)


def is_current(spec: RunSpec, preset: Preset, out: Path) -> bool:
    """Whether the run's saved config is the one the plan asks for (True when it has not started)."""
    saved = out / "runs" / spec.key / "config.yaml"
    if not saved.is_file():
        return True
    return settings_that_matter(load_config(saved)) == settings_that_matter(run_config(spec, preset, out))


def settings_that_matter(config: Config) -> dict[str, Any]:
    """The config as the run uses it: without the distill section when there is no teacher, without
    TAR's flat options when another method distills (those keys must sit at their defaults there,
    distill/pair.py), and without the options of a TAR term switched off (TAR.term_options). A changed
    TAR default then sets aside only the runs it can have changed, not the teachers, the students
    alone, the baselines, or a TAR run without the term it belongs to."""
    settings = config_to_dict(config)
    distill = settings["distill"]
    if distill["teacher"] is None:
        del settings["distill"]
    elif idle := idle_tar_keys(config.distill):
        settings["distill"] = {key: value for key, value in distill.items() if key not in idle}
    else:
        unused = {option for weight, options in TAR.term_options.items() if distill[weight] == 0
                  for option in options}
        settings["distill"] = {key: value for key, value in distill.items() if key not in unused}
    return settings


def set_aside(spec: RunSpec, out: Path) -> Path:
    """Move a stale run's folder, record and log under OUT/stale/, so it reruns and nothing is lost."""
    target = out / "stale" / f"{spec.key}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    target.mkdir(parents=True)
    for path in (out / "runs" / spec.key, record_path(out, spec.key), out / "logs" / f"{spec.key}.log"):
        if path.exists():
            os.replace(path, target / path.name)
    return target


def run_sweep(preset: Preset, out: Path, *, seeds: int = 3, jobs: int | None = None,
              only: list[str] | None = None) -> dict[str, Any]:
    """Run every planned run that has no record yet; a run starts once the runs it depends on exist.

    The plan grows as runs finish: the last seed-0 baseline of a dataset settles its best baseline,
    whose other seeds then join the plan (sweep_plan).
    only: if given, substrings; runs whose key contains none of them are skipped.
    Returns {"done": [...keys], "failed": {key: traceback}, "skipped": [...keys]}.
    """
    jobs = jobs or preset.jobs
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ensure_data(preset, out)
    plan: list[RunSpec] = []

    def new_runs() -> list[RunSpec]:
        """Runs the plan has gained (all of them at first), stale ones set aside; those without a record.

        `plan` becomes the current plan, in its priority order."""
        current = [s for s in sweep_plan(preset, seeds, load_records(out)) if not only or any(o in s.key for o in only)]
        added = [s for s in current if s not in plan]
        for spec in added:
            if not is_current(spec, preset, out):
                log.warning("%s: its config differs from the plan's; moved to %s and rerun", spec.key,
                            set_aside(spec, out))
        plan[:] = current
        return [s for s in added if not record_path(out, s.key).is_file()]

    pending = new_runs()
    skipped = [s.key for s in plan if s not in pending]
    log.info("bench reproduce %s: %d runs planned, %d already done, %d to run, %d at a time",
             preset.name, len(plan), len(skipped), len(pending), jobs)
    if pending and forces_emulated_bf16(preset):
        log.warning("bench reproduce %s: its runs train in bf16 autocast (train.amp=bf16), which this CPU does not "
                    "compute natively: expect them to take about 20 times as long as the times in docs/RESULTS.md "
                    "(--preset cpu_fp32 runs the same plan in fp32)",
                    preset.name)
    done: list[str] = []
    failed: dict[str, str] = {}
    running: dict[Future, RunSpec] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            for spec in _ready(pending, preset, out, jobs - len(running)):
                pending.remove(spec)
                running[pool.submit(_execute_safely, spec, preset, out)] = spec
                log.info("started %s (log: %s)", spec.key, out / "logs" / f"{spec.key}.log")
            if not running:  # what is left waits on a run that failed
                for spec in pending:
                    failed[spec.key] = f"{' and '.join(spec.dependencies(preset))} did not finish"
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec, record = running.pop(future), future.result()
                if "error" in record:
                    failed[spec.key] = record["error"]
                    log.error("%s failed:\n%s", spec.key, record["error"])
                else:
                    done.append(spec.key)
                    log.info("finished %s: test AP %.1f AP50 %.1f in %.1f min (%d left, %.0f min elapsed)",
                             spec.key, 100 * record["ap"], 100 * record["ap50"], record["wall_s"] / 60,
                             len(pending) + len(running), (time.perf_counter() - started) / 60)
            for spec in new_runs():
                log.info("planned %s (the best baseline of its dataset runs every seed)", spec.key)
                pending.append(spec)
            pending.sort(key=plan.index)  # a run added to the plan takes its place in the priority order
    return {"done": done, "failed": failed, "skipped": skipped}


def forces_emulated_bf16(preset: Preset) -> bool:
    """Whether the preset's runs force bf16 on a CPU that only emulates it (engine.setup.cpu_computes_bf16)."""
    import torch

    from tardistill.engine.setup import cpu_computes_bf16

    forced = any("train.amp=bf16" in overrides for overrides in preset.overrides.values())
    return forced and not torch.cuda.is_available() and not cpu_computes_bf16()


def _ready(pending: list[RunSpec], preset: Preset, out: Path, slots: int) -> list[RunSpec]:
    """Up to `slots` pending runs, in plan order, whose teacher and starting weights (if any) exist."""
    ready = [s for s in pending if all(record_path(out, k).is_file() for k in s.dependencies(preset))]
    return ready[:max(slots, 0)]
