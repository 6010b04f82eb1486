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
from tardistill.bench.plan import RunSpec
from tardistill.bench.presets import PRESETS, Preset
from tardistill.bench.reproduce import best_baselines, load_records, run_config, sweep_plan
from tardistill.bench.summary import (
    Row, ablation_claims, choice_rows, component_rows, convergence, dataset_claims,
    headline_rows, mean_std, retinanet_rows, select, sensitivity_claim, sensitivity_grid, weak_teacher_note)
from tardistill.metrics import format_table

log = logging.getLogger(__name__)
PERFORMANCE_FILE = "performance.json"


def _markers(preset: Preset) -> tuple[str, str]:
    return (f"<!-- bench reproduce {preset.name}: generated, edits are overwritten -->",
            f"<!-- end bench reproduce {preset.name} -->")


def _table(rows: list[Row], reference: Row | None, *, reference_name: str) -> str:
    """A markdown table of mean ± std test AP and AP50 and best validation AP, with each row's test AP
    difference to the reference."""
    if not rows:
        return "No run of this table has finished yet."
    head = ["", "AP", "AP50", "val AP", "seeds", f"AP vs {reference_name}"]
    body = [[r.label, mean_std(r.ap), mean_std(r.ap50), mean_std(r.val_ap), str(r.n),
             "" if reference is None or r is reference else f"{100 * (r.mean_ap - reference.mean_ap):+.1f}"]
            for r in rows]
    return format_table(head, body, markdown=True)


def _find(rows: list[Row], label: str) -> Row | None:
    return next((r for r in rows if r.label == label), None)


def _weak_teacher_lines(rows: list[Row]) -> list[str]:
    """The warning of a table whose teacher is no better than its student alone, or nothing."""
    note = weak_teacher_note(_find(rows, "teacher"), _find(rows, "student alone"))
    return [f"- {note}", ""] if note else []


def _performance(preset: Preset, out: Path, *, measure: bool) -> dict[str, Any] | None:
    """The cached performance numbers; measured now if asked and the runs they need exist."""
    path = out / PERFORMANCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    spec = RunSpec("faster_rcnn", "tar", "full", 0, "main", dataset=next(iter(preset.datasets)))
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
    first = next(iter(preset.datasets))
    lines = [_markers(preset)[0], "", f"## Reproduction benchmark, `{preset.name}` preset", "",
             *_header(preset, records, seeds), ""]
    for dataset in preset.datasets:
        lines += _dataset_section(records, dataset, preset)
    components = component_rows(records, first)
    lines += [f"### The paper's ablation ({first}, Faster R-CNN + FPN)", "",
              _table(components, _find(components, "student alone"), reference_name="student alone"), "",
              f"### Sensitivity of TAR's weights ({first}, seed 0): test AP (val AP)", "",
              _sensitivity_table(records, first), "",
              f"- Does any weight at 0.3x or 3x stop the student learning? {sensitivity_claim(records, first)}.", "",
              f"### TAR's choices, each changed alone ({first}, seed 0)", ""]
    if "choices" in preset.dropped_groups:
        lines += ["Not run by this preset (cut for time); earlier measurements are in "
                  "docs/results_superseded.json.", ""]
    else:
        choices = choice_rows(records, first)
        lines += [_table(choices, choices[0] if choices else None, reference_name="defaults"), ""]
    if "retinanet" in preset.overrides:
        retina = retinanet_rows(records, first)
        lines += [f"### RetinaNet ({first})", "",
                  _table(retina, _find(retina, "student alone"), reference_name="student alone"), ""]
        lines += _weak_teacher_lines(retina)
        students = select(records, dataset=first, method="none", detector="retinanet")
        if students:
            lines += [f"- Student alone converged: {_convergence_text(students)}.", ""]
    lines += [f"### The paper's other claims ({first})", "",
              *[f"- {claim}: {finding}." for claim, finding in ablation_claims(records, first)], "",
              "A difference is decided (held, did not hold, within seed noise) only when both rows have two or "
              "more seeds; with one seed on either side it is reported as unconfirmed.", "",
              "### Plots", "", *[f"![{p.stem}]({p.relative_to(docs).as_posix()})" for p in figures], "",
              "### Performance", "", *_performance_section(performance), "", _markers(preset)[1]]
    return "\n".join(lines)


def reproduce_command(preset: Preset, seeds: int) -> str:
    """The `bench reproduce` command line that plans PRESET's runs, its --seed-group options included."""
    registered = PRESETS[preset.name].seeded_groups if preset.name in PRESETS else ()
    extra = "".join(f" --seed-group {g}" for g in preset.seeded_groups if g not in registered)
    return f"tardistill bench reproduce --preset {preset.name} --seeds {seeds}{extra}"


def _header(preset: Preset, records: list[dict], seeds: int) -> list[str]:
    """How the sweep ran, from the records: counts, dates, machine, overlap, load and times."""
    planned = len(sweep_plan(preset, seeds, records))
    machines = sorted({r["machine"] for r in records}) or ["(no runs yet)"]
    dates = sorted(r["finished"][:10] for r in records if "finished" in r)
    elapsed = elapsed_sweep_minutes(records)
    loads = [v for r in records for v in r.get("load_avg", [])]
    text = (f"Generated by `{reproduce_command(preset, seeds)}`. "
            f"{len(records)} of {planned} planned runs finished" + (f" ({dates[0]} to {dates[-1]})" if dates else "")
            + f", on {', '.join(machines)}, {preset.threads or 'all'} torch thread(s) per run. "
            + _imported_text(records)
            + f"From the records' start and end times, up to {max_overlap(records)} run(s) trained at once"
            + (f"; the 1-minute load average at their starts and ends ranged {min(loads):.1f}-{max(loads):.1f} "
               f"(above {preset.jobs}, other work shared the cores)" if loads else "")
            + f". {sum(r['wall_s'] for r in records) / 60:.0f} min of training summed over runs"
            + (f"; {elapsed:.0f} min from the first run's start to the last run's end (a sweep resumed later "
               "counts the pause too)" if elapsed is not None else "") + ".")
    return [text, "",
            f"Every backbone starts pretrained: a Faster R-CNN of its architecture trained from scratch on the "
            f"shapes set (eight shapes no benchmark uses; {preset.pretrain.get('student', 0)} iterations for the "
            f"student's, {preset.pretrain.get('teacher', 0)} for the teacher's), of which only the backbone body is "
            "loaded, as from an ImageNet file. Datasets: "
            + ", ".join(f"{name} ({d['num_train']} / {d['num_val']} / {d['num_test']} images at {d['image_size']} px)"
                        for name, d in preset.datasets.items())
            + f". Students train {preset.student_iterations['faster_rcnn']} iterations, teachers "
            f"{preset.teacher_iterations['faster_rcnn']}, with {_training_settings(preset)}. "
            f"Runs of groups {', '.join(preset.seeded_groups)} use "
            f"seeds 0..{seeds - 1}, the others seed 0{_seeded_baselines_text(preset, records)}. AP and AP50 are on the "
            f"test split, from the checkpoint "
            f"best on validation; val AP is that best validation AP, the number settings are chosen by. "
            f"TAR runs at the shipped defaults (docs/METHOD.md) unless a row says otherwise; each baseline at "
            f"its paper's defaults" + (f" ({', '.join(preset.dropped_baselines)} not run by this preset, for time)"
                                       if preset.dropped_baselines else "") + "." + _pretraining_text(records)]


def _imported_text(records: list[dict]) -> str:
    """The records that did not come from this sweep's own runs: where they come from and how they ran."""
    imported = [r for r in records if "imported_from" in r]
    if not imported:
        return ""
    sources = sorted({r["imported_from"] for r in imported})
    conditions = sorted({r["conditions"] for r in imported if "conditions" in r})
    return (f"{len(imported)} of them ({', '.join(sorted(r['key'] for r in imported))}) were imported from "
            f"{', '.join(sources)}: runs of the same config, made as probes before it became the plan's"
            + (f" ({'; '.join(conditions)})" if conditions else "")
            + "; their start and end times were not recorded and their wall times are not comparable. ")


def _training_settings(preset: Preset) -> str:
    """The preset's own train.* settings of its Faster R-CNN runs, as `key=value` text."""
    settings = [item for item in preset.overrides["faster_rcnn"] if item.startswith("train.")]
    return ", ".join(f"`{item}`" for item in settings) or "the config defaults"


def _seeded_baselines_text(preset: Preset, records: list[dict]) -> str:
    """The baselines that run every seed although their group runs one (each dataset's best)."""
    if not preset.seeds_best_baseline:
        return ""
    chosen = best_baselines(preset, records)
    named = "; ".join(f"{chosen[d]} on {d}" if d in chosen else f"not chosen yet on {d}" for d in preset.datasets)
    return (f", except the best baseline of each dataset (best validation AP at seed 0, chosen once all "
            f"its seed-0 baselines finished), which runs every seed ({named})")


def _pretraining_text(records: list[dict]) -> str:
    """The pretraining runs' own result on the shapes set, where they finished."""
    found = [f"{r['variant']}'s {100 * max(ap for _, ap in r['val_curve']):.1f}" for r in records
             if r["method"] == "pretrain" and r.get("val_curve")]
    return f" Pretraining reached a best validation AP on the shapes set of {' and '.join(found)}." if found else ""


def _dataset_section(records: list[dict], dataset: str, preset: Preset) -> list[str]:
    rows = headline_rows(records, dataset)
    runs = select(records, dataset=dataset)
    minutes = elapsed_sweep_minutes(runs)
    lines = [f"### {dataset}: TAR against the student alone and the baselines (Faster R-CNN + FPN)", "",
             _table(rows, _find(rows, "student alone"), reference_name="student alone"), "",
             *_weak_teacher_lines(rows),
             *[f"- {claim}: {finding}." for claim, finding in dataset_claims(records, dataset)],
             f"- Student alone converged (val AP gain over the last quarter < 1 AP and <= 10% of its final "
             f"value): {_convergence_text(select(runs, method='none', detector='faster_rcnn'))}.",
             f"- This dataset's runs: {len(runs)}, {sum(r['wall_s'] for r in runs) / 60:.0f} min of training summed"
             + (f", {minutes:.0f} min from the first start to the last end" if minutes is not None else "") + ".", ""]
    return lines


def _convergence_text(records: list[dict]) -> str:
    found = [(r["seed"], convergence(r)) for r in sorted(records, key=lambda r: r["seed"])]
    parts = [f"seed {seed}: {'yes' if c['converged'] else 'no'} ({100 * c['gain']:+.1f} AP, final "
             f"{100 * c['final']:.1f})" for seed, c in found if c is not None]
    return "; ".join(parts) if parts else "not measured (runs missing)"


def _sensitivity_table(records: list[dict], dataset: str) -> str:
    head = ["weight", "0.3x", "1x (default)", "3x"]
    body = [[key] + ["-" if r is None else f"{mean_std(r.ap)} ({mean_std(r.val_ap)})" for r in cells]
            for key, cells in sensitivity_grid(records, dataset)]
    return format_table(head, body, markdown=True)


def max_overlap(records: list[dict]) -> int:
    """The most runs whose start-to-end intervals overlap at one moment."""
    events = sorted((datetime.fromisoformat(r[k]), +1 if k == "started" else -1)
                    for r in records if "started" in r for k in ("started", "finished"))
    # at equal times the end (-1) sorts first: a run that ends as another starts does not overlap it
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


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
    found = load_records(out)
    planned = {spec.key for spec in sweep_plan(preset, seeds, found)}
    records = [r for r in found if r["key"] in planned]  # not probes or retired plan rows
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
