"""The reproduction report: a section of docs/RESULTS.md, docs/results.json and PNG plots.

The section sits between two marker lines and is replaced on every invocation, so the hand-written
parts of RESULTS.md stay; records of other presets already in results.json are kept.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tardistill.bench import plots
from tardistill.bench.plan import RunSpec, plan_runs
from tardistill.bench.presets import Preset
from tardistill.bench.reproduce import load_records, run_config
from tardistill.bench.summary import (FULL_METHOD_LABEL, TUNED_LABEL, Row, baseline_rows, choice_rows, claims,
                                      component_rows, mean_std, retinanet_rows)
from tardistill.metrics import format_table

log = logging.getLogger(__name__)
PERFORMANCE_FILE = "performance.json"


def _markers(preset: Preset) -> tuple[str, str]:
    return (f"<!-- bench reproduce {preset.name}: generated, edits are overwritten -->",
            f"<!-- end bench reproduce {preset.name} -->")


def _table(rows: list[Row], reference: Row | None, *, reference_name: str) -> str:
    """A markdown table of mean ± std test AP and AP50 and best validation AP, with each row's test AP
    difference to the reference."""
    head = ["", "AP", "AP50", "val AP", "seeds", f"AP vs {reference_name}"]
    body = [[r.label, mean_std(r.ap), mean_std(r.ap50), mean_std(r.val_ap), str(r.n),
             "" if reference is None or r is reference else f"{100 * (r.mean_ap - reference.mean_ap):+.1f}"]
            for r in rows]
    return format_table(head, body, markdown=True)


def _find(rows: list[Row], label: str) -> Row | None:
    return next((r for r in rows if r.label == label), None)


def _performance(preset: Preset, out: Path, *, measure: bool) -> dict[str, Any] | None:
    """The cached performance numbers; measured now if asked and the runs they need exist."""
    path = out / PERFORMANCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    spec = RunSpec("faster_rcnn", "tar", "full", 0, "components")
    teacher = out / "runs" / spec.teacher_key / "best.safetensors"
    student = out / "runs" / spec.key / "best.safetensors"
    if not (measure and teacher.is_file() and student.is_file()):
        return None
    from tardistill.bench.performance import measure_performance
    from tardistill.bench.reproduce import machine_description

    log.info("bench reproduce: measuring the performance section (a few minutes)")
    numbers = {**measure_performance(teacher, student, run_config(spec, preset, out)),
               "machine": machine_description(), "date": date.today().isoformat()}
    path.write_text(json.dumps(numbers, indent=2))
    return numbers


def _performance_section(numbers: dict[str, Any] | None) -> list[str]:
    if numbers is None:
        return ["Not measured yet: it is measured once every run of the sweep has finished, so that no "
                "training runs beside the timings."]
    step, memory, coco = numbers["step_time"], numbers["peak_memory"], numbers["coco_eval"]
    lines = [f"Measured on {numbers['machine']}, {numbers['date']}.", "",
             f"- Distillation step / (student step + teacher inference forward), one process, same batch of "
             f"{step['batch_size']}: {step['distill_step_s']:.3f} s / ({step['student_step_s']:.3f} s + "
             f"{step['teacher_forward_s']:.3f} s) = **{step['ratio']:.2f}** (goal <= 1.15).",
             f"- Peak memory, fresh process each: distillation {memory['distill_peak_mib']:.0f} MiB against plain "
             f"student training {memory['student_peak_mib']:.0f} MiB (x{memory['ratio']:.2f}).",
             ]
    if "pycocotools_s" in coco:
        lines.append(f"- COCO evaluation of the TAR student's {coco['detections']} test detections on "
                     f"{coco['images']} images: faster-coco-eval {coco['faster_coco_eval_s']:.2f} s, pycocotools "
                     f"{coco['pycocotools_s']:.2f} s (x{coco['speedup']:.1f} faster, best of 3); AP "
                     f"{coco['faster_coco_eval_AP']:.6f} vs {coco['pycocotools_AP']:.6f}, largest difference over the "
                     f"9 summary stats {coco['max_stat_difference']:.1e}.")
    else:
        lines.append(f"- COCO evaluation timing: pycocotools {coco['pycocotools']}.")
    body = [[name, f"{r['params_M']:.2f}", f"{r['gflops']:.2f}", f"{r['cpu_ms_batch1']:.1f}", f"{r['cpu_ms_batch8']:.1f}"]
            for name, r in (("teacher", numbers["teacher"]), ("student", numbers["student"]))]
    lines += ["", format_table(["", "params (M)", "GFLOPs (1 image)", "CPU ms batch 1", "CPU ms batch 8"], body,
                               markdown=True)]
    return lines


def _section(preset: Preset, records: list[dict], seeds: int, figures: list[Path], docs: Path,
             performance: dict[str, Any] | None) -> str:
    planned = len(plan_runs(preset, seeds))
    machines = sorted({r["machine"] for r in records}) or ["(no runs yet)"]
    dates = sorted(r["finished"][:10] for r in records)
    run_minutes = sum(r["wall_s"] for r in records) / 60
    sweep_minutes = estimated_sweep_minutes(records, preset.jobs)
    elapsed = elapsed_sweep_minutes(records)
    components, choices = component_rows(records), choice_rows(records)
    baselines, retinanet = baseline_rows(records), retinanet_rows(records)
    lines = [
        _markers(preset)[0], "",
        f"## Reproduction benchmark, `{preset.name}` preset", "",
        f"Generated by `tardistill bench reproduce --preset {preset.name} --seeds {seeds}`. "
        f"{len(records)} of {planned} planned runs finished"
        + (f" ({dates[0]} to {dates[-1]})" if dates else "") + f", on {', '.join(machines)}; "
        f"{preset.jobs} run(s) at a time, {preset.threads or 'all'} torch thread(s) each; "
        f"{run_minutes:.0f} min of training summed over runs, about {sweep_minutes:.0f} min of wall time for "
        f"these runs (the slowest teacher, then the other runs {preset.jobs} at a time)"
        + (f"; measured: {elapsed:.0f} min from the first run's start to the last run's end (a sweep "
           "resumed later counts the pause too)" if elapsed is not None else "") + ". AP and AP50 are on the test split, from the "
        f"checkpoint of each run that was best on the validation split; val AP is that best validation AP, the "
        f"number to choose settings by. Data: {preset.data['num_train']} / {preset.data['num_val']} / "
        f"{preset.data['num_test']} images at {preset.data['image_size']} px. Students train "
        f"{preset.student_iterations['faster_rcnn']} iterations (teachers {preset.teacher_iterations['faster_rcnn']}"
        f" Faster R-CNN, {preset.teacher_iterations['retinanet']} RetinaNet); runs of groups "
        f"{', '.join(preset.seeded_groups)} use seeds 0..{seeds - 1}, the others seed 0.", "",
        "### The paper's ablation (Faster R-CNN + FPN)", "",
        _table(components, _find(components, "student alone"), reference_name="student alone"), "",
        "### Choices the paper leaves open (each changed alone from the full method, seed 0)", "",
        _table(choices, _find(choices, FULL_METHOD_LABEL), reference_name="full method"), "",
        "### TAR against other distillation methods (same teacher, student, data and schedule)", "",
        _table(baselines, _find(baselines, "student alone"), reference_name="student alone"), "",
        *([f"`{TUNED_LABEL}`: {', '.join(f'`{o}`' for o in preset.tar_tuned)} on top of the defaults, the best "
           "of each open choice on a validation split, combined (`Preset.tar_tuned` says which split).", ""]
          if _find(baselines, TUNED_LABEL) else []),
        "### RetinaNet", "",
        _table(retinanet, _find(retinanet, "student alone"), reference_name="student alone"), "",
        "### Which of the paper's claims held here", "",
        *[f"- {claim}: {finding}." for claim, finding in claims(records)], "",
        "A difference counts as held or not only when it is larger than the seed standard deviation; "
        "rows with one seed carry no noise estimate, so treat their differences of a point or two as unconfirmed.", "",
        "### Plots", "",
        *[f"![{p.stem}]({p.relative_to(docs).as_posix()})" for p in figures], "",
        "### Performance", "",
        *_performance_section(performance), "",
        _markers(preset)[1],
    ]
    return "\n".join(lines)


def estimated_sweep_minutes(records: list[dict], jobs: int) -> float:
    """Wall time of the recorded runs had they run back to back: the slowest teacher first (every
    other run waits for it, directly or through init_from), then the rest `jobs` at a time."""
    teachers = [r["wall_s"] for r in records if r["method"] == "teacher"]
    others = sum(r["wall_s"] for r in records) - max(teachers, default=0.0)
    return (max(teachers, default=0.0) + others / max(jobs, 1)) / 60


def elapsed_sweep_minutes(records: list[dict]) -> float | None:
    """Minutes from the earliest run start to the latest run end; None when a record predates the
    "started" field (or there are none)."""
    if not records or any("started" not in r for r in records):
        return None
    start = min(datetime.fromisoformat(r["started"]) for r in records)
    end = max(datetime.fromisoformat(r["finished"]) for r in records)
    return (end - start).total_seconds() / 60


def _replace_section(results_md: Path, section: str, preset: Preset) -> None:
    begin, end = _markers(preset)
    text = results_md.read_text() if results_md.is_file() else "# Results\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results_md.write_text(text)


def _write_results_json(path: Path, records: list[dict], preset: Preset) -> None:
    """One record per run; records of other presets already in the file are kept."""
    kept = [r for r in json.loads(path.read_text()) if r.get("preset") != preset.name] if path.is_file() else []
    path.write_text(json.dumps(kept + records, indent=1))


def write_report(preset: Preset, out: Path, *, docs: Path, seeds: int, measure_performance: bool) -> list[Path]:
    """Write the report from the finished runs under OUT; returns the files written."""
    planned = {spec.key for spec in plan_runs(preset, seeds)}
    records = [r for r in load_records(out) if r["key"] in planned]  # not probes or retired plan rows
    docs.mkdir(parents=True, exist_ok=True)
    prefix = docs / f"reproduce_{preset.name}"
    figures = [plots.plot_val_ap(records, out / "runs", Path(f"{prefix}_val_ap.png")),
               plots.plot_decay(records, out / "runs", Path(f"{prefix}_decay.png")),
               plots.plot_gate_rates(records, out / "runs", Path(f"{prefix}_gate_rates.png"))]
    # Measured on a quiet machine only: while runs of the sweep still train beside it, timings would be
    # inflated, and the numbers are cached.
    complete = len(records) == len(planned)
    performance = _performance(preset, out, measure=measure_performance and complete)
    _replace_section(docs / "RESULTS.md", _section(preset, records, seeds, figures, docs, performance), preset)
    _write_results_json(docs / "results.json", records, preset)
    return [docs / "RESULTS.md", docs / "results.json", *figures]
