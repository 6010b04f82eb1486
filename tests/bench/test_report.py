"""The reproduction report: a replaceable RESULTS.md section, results.json and the plots."""

import json

from tardistill.bench.plan import plan_runs, with_seeded_groups
from tardistill.bench.presets import PRESETS
from tardistill.bench.report import reproduce_command, write_report

CPU = PRESETS["cpu"]


def fake_run(out, key, detector, method, variant, seed, ap, started="2026-11-27T22:00:00+00:00"):
    """A finished run as bench reproduce leaves it: a record and the run's metrics.jsonl."""
    run_dir = out / "runs" / key
    run_dir.mkdir(parents=True)
    lines = [{"step": s, "kind": "train", "stat/decay_w": 1 - s / 100, "stat/cls_gate_rate": 0.9,
              "stat/reg_gate_rate": 0.6} for s in (20, 40)]
    lines += [{"step": s, "kind": "val", "AP": ap * s / 100} for s in (50, 100)]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    record = {"detector": detector, "method": method, "variant": variant, "seed": seed, "group": "main",
              "key": key, "preset": "cpu", "dataset": "synth", "ap": ap, "ap50": ap + 0.2,
              "val_curve": [[50, ap / 2], [100, ap]], "iterations": 100, "wall_s": 60.0, "load_avg": [1.0, 2.5],
              "machine": "test CPU", "started": started, "finished": "2026-11-27T23:00:00+00:00"}
    (out / "records").mkdir(exist_ok=True)
    (out / "records" / f"{key}.json").write_text(json.dumps(record))


def test_report_replaces_its_section_and_keeps_the_rest(tmp_path):
    out, docs = tmp_path / "sweep", tmp_path / "docs"
    fake_run(out, "synth-faster_rcnn-teacher-default-s0", "faster_rcnn", "teacher", "default", 0, 0.5,
             started="2026-11-27T21:00:00+00:00")
    fake_run(out, "synth-faster_rcnn-none-student-s0", "faster_rcnn", "none", "student", 0, 0.3)
    fake_run(out, "synth-faster_rcnn-tar-full-s0", "faster_rcnn", "tar", "full", 0, 0.4)
    fake_run(out, "synth-retinanet-none-student-s0", "retinanet", "none", "student", 0, 0.2)
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\nhand-written text\n")
    (docs / "results.json").write_text(json.dumps([{"preset": "gpu", "method": "teacher", "ap": 0.6}]))

    for _ in range(2):
        written = write_report(CPU, out, docs=docs, seeds=3, measure_performance=False)

    text = (docs / "RESULTS.md").read_text()
    assert text.count("## Reproduction benchmark, `cpu` preset") == 1
    assert "hand-written text" in text
    assert "| TAR (shipped defaults) | 40.0 | 60.0 | 40.0 | 1 | +10.0 |" in text
    assert "- Share of the teacher-student gap TAR closes: 50%." in text
    assert "The teacher ended at or below the student alone" not in text  # 50.0 against 30.0
    assert "beats the student alone by more than 2 seed stds: unconfirmed, one seed (+10.0 AP)" in text
    # run conditions come from the records: four runs overlapped, and the load average is stated
    assert "up to 4 run(s) trained at once" in text and "ranged 1.0-2.5" in text
    # each detector's students alone are judged in their own table, not as extra seeds of the other
    assert ("converged (val AP gain over the last quarter < 1 AP and <= 10% of its final value): "
            "seed 0: no (+15.0 AP, final 30.0).") in text
    assert "- Student alone converged: seed 0: no (+10.0 AP, final 20.0)." in text
    assert f"4 of {len(plan_runs(CPU, seeds=3))} planned runs finished" in text
    records = json.loads((docs / "results.json").read_text())
    assert {r["preset"] for r in records} == {"gpu", "cpu"} and len(records) == 5
    teacher = next(r for r in records if r["preset"] == "cpu" and r["method"] == "teacher")
    assert {"detector", "method", "variant", "seed", "ap", "ap50", "iterations", "wall_s"} <= set(teacher)
    for png in written[2:]:
        assert png.read_bytes().startswith(b"\x89PNG")


def test_max_overlap_counts_runs_training_at_once():
    from tardistill.bench.report import max_overlap

    def run(start, end):
        return {"started": f"2026-11-28T{start}:00+00:00", "finished": f"2026-11-28T{end}:00+00:00"}

    assert max_overlap([run("04:00", "05:00"), run("04:30", "05:30"), run("04:40", "04:50")]) == 3
    assert max_overlap([run("04:00", "05:00"), run("05:00", "06:00")]) == 1  # back to back
    assert max_overlap([]) == 0


def test_elapsed_sweep_minutes_spans_first_start_to_last_finish():
    from tardistill.bench.report import elapsed_sweep_minutes

    records = [{"started": "2026-11-28T04:00:00+00:00", "finished": "2026-11-28T04:50:00+00:00"},
               {"started": "2026-11-28T04:10:00+00:00", "finished": "2026-11-28T06:05:00+00:00"}]
    assert elapsed_sweep_minutes(records) == 125
    assert elapsed_sweep_minutes([*records, {"finished": "2026-11-28T07:00:00+00:00"}]) is None  # older record
    assert elapsed_sweep_minutes([]) is None


def test_a_record_imported_without_its_run_folder_is_reported_and_named(tmp_path):
    out, docs = tmp_path / "sweep", tmp_path / "docs"
    fake_run(out, "synth-faster_rcnn-none-student-s0", "faster_rcnn", "none", "student", 0, 0.3)
    # a probe run of the same config, whose record is all that is left: no folder, no start or end time
    imported = {"detector": "faster_rcnn", "method": "tar", "variant": "full", "seed": 0, "group": "main",
                "key": "synth-faster_rcnn-tar-full-s0", "preset": "cpu", "dataset": "synth", "ap": 0.4,
                "ap50": 0.6, "val_curve": [[50, 0.2], [100, 0.4]], "iterations": 100, "wall_s": 600.0,
                "machine": "test CPU", "imported_from": "docs/probe.json", "conditions": "six at once"}
    (out / "records" / "synth-faster_rcnn-tar-full-s0.json").write_text(json.dumps(imported))

    written = write_report(CPU, out, docs=docs, seeds=3, measure_performance=False)

    text = (docs / "RESULTS.md").read_text()
    assert ("1 of them (synth-faster_rcnn-tar-full-s0) were imported from docs/probe.json: runs of the same "
            "config, made as probes before it became the plan's (six at once)") in text
    assert "| TAR (shipped defaults) | 40.0 |" in text
    assert "(2026-11-27 to 2026-11-27)" in text  # the dates are the records' that have them
    for png in written[2:]:
        assert png.read_bytes().startswith(b"\x89PNG")


def test_the_report_names_the_command_that_plans_its_runs():
    assert reproduce_command(PRESETS["cpu_fp32"], 3) == "tardistill bench reproduce --preset cpu_fp32 --seeds 3"
    seeded = with_seeded_groups(CPU, ["retinanet", "baselines"])
    assert reproduce_command(seeded, 3) == ("tardistill bench reproduce --preset cpu --seeds 3 "
                                            "--seed-group baselines --seed-group retinanet")
