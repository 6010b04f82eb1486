"""bench reproduce: the plan, the per-run records, resuming, and failures that do not stop the sweep."""

import json
from dataclasses import replace

from tardistill.bench.plan import BASELINES, CHOICES, COMPONENTS, plan_runs
from tardistill.bench.presets import PRESETS
from tardistill.bench.reproduce import load_records, run_sweep

from tests.conftest import TINY_MODEL

TINY = replace(
    PRESETS["cpu"], name="tiny", data=dict(num_train=8, num_val=4, num_test=4, image_size=64),
    overrides={"faster_rcnn": ("model.kind=faster_rcnn", *TINY_MODEL, "train.batch_size=2",
                               "train.warmup_iterations=1"),
               "retinanet": ("model.kind=retinanet", *TINY_MODEL, "train.batch_size=2", "train.warmup_iterations=1")},
    teacher={"faster_rcnn": ("model.fpn_channels=32",), "retinanet": ("model.fpn_channels=32",)},
    student={"faster_rcnn": (), "retinanet": ()},
    teacher_iterations={"faster_rcnn": 2, "retinanet": 2}, student_iterations={"faster_rcnn": 2, "retinanet": 2},
    jobs=1, threads=1)


def test_plan_has_every_row_the_report_needs():
    runs = plan_runs(PRESETS["cpu"], seeds=3)
    keys = [run.key for run in runs]
    assert len(keys) == len(set(keys))
    frcnn_tar = {(r.variant, r.seed) for r in runs if r.detector == "faster_rcnn" and r.method == "tar"}
    assert {(name, seed) for name in COMPONENTS for seed in range(3)} <= frcnn_tar
    assert {(name, 0) for name in CHOICES} <= frcnn_tar
    assert {r.method for r in runs if r.group == "baselines"} == set(BASELINES)
    assert [(r.variant, r.seed) for r in runs if r.group == "tuned"] == [("tuned", s) for s in range(3)]
    assert not any(r.group == "tuned" for r in plan_runs(PRESETS["gpu"], seeds=3))  # nothing tuned there yet
    assert {r.method for r in runs if r.detector == "retinanet"} == {"teacher", "none", "tar"}
    # teachers first: nothing that needs one is planned before it
    assert keys.index("faster_rcnn-teacher-default-s0") == 0
    # the runs that need no teacher come before all that do: they fill the second slot while it trains
    first_needing_teacher = next(i for i, r in enumerate(runs) if r.needs_teacher)
    assert all(r.needs_teacher or r.method == "teacher" for r in runs[first_needing_teacher:])


def test_sweep_writes_records_and_resumes(tmp_path):
    only = ["faster_rcnn-teacher", "faster_rcnn-none-student-s0", "faster_rcnn-tar-full-s0"]
    first = run_sweep(TINY, tmp_path, seeds=1, only=only)
    assert first["failed"] == {} and len(first["done"]) == 3
    records = {r["key"]: r for r in load_records(tmp_path)}
    tar = records["faster_rcnn-tar-full-s0"]
    assert (tar["method"], tar["variant"], tar["seed"], tar["iterations"]) == ("tar", "full", 0, 2)
    assert 0 <= tar["ap"] <= 1 and tar["wall_s"] > 0 and tar["val_curve"]
    assert tar["started"] <= tar["finished"]
    assert records["faster_rcnn-teacher-default-s0"]["method"] == "teacher"
    second = run_sweep(TINY, tmp_path, seeds=1, only=only)
    assert second["done"] == [] and sorted(second["skipped"]) == sorted(records)


def test_a_failed_teacher_fails_its_students_and_writes_no_record(tmp_path):
    broken = replace(TINY, teacher={**TINY.teacher, "faster_rcnn": ("model.backbone=no_such_net",)})
    result = run_sweep(broken, tmp_path, seeds=1, only=["faster_rcnn-teacher", "faster_rcnn-tar-full-s0"])
    assert "no_such_net" in result["failed"]["faster_rcnn-teacher-default-s0"]
    assert "did not finish" in result["failed"]["faster_rcnn-tar-full-s0"]
    assert load_records(tmp_path) == []
    assert json.loads(json.dumps(result))  # the summary is plain data


def test_a_changed_preset_sets_stale_runs_aside_and_reruns_them(tmp_path):
    only = ["faster_rcnn-teacher", "faster_rcnn-tar-full-s0"]
    run_sweep(TINY, tmp_path, seeds=1, only=only)
    changed = replace(TINY, tar=("distill.cls_weight=0.5",))
    result = run_sweep(changed, tmp_path, seeds=1, only=only)
    assert result["done"] == ["faster_rcnn-tar-full-s0"]  # the teacher's config did not change
    (stale,) = (tmp_path / "stale").iterdir()
    assert stale.name.startswith("faster_rcnn-tar-full-s0-")
    assert (stale / "faster_rcnn-tar-full-s0" / "best.safetensors").is_file()
    assert (stale / "faster_rcnn-tar-full-s0.json").is_file()
    records = {r["key"]: r for r in load_records(tmp_path)}
    assert set(records) == {"faster_rcnn-teacher-default-s0", "faster_rcnn-tar-full-s0"}


def test_init_from_starts_a_run_from_another_runs_weights_and_waits_for_it(tmp_path):
    from tardistill.config import load_config

    preset = replace(TINY, init_from={"retinanet": {"teacher": "faster_rcnn-teacher-default-s0"}})
    only = ["faster_rcnn-teacher", "retinanet-teacher"]
    result = run_sweep(replace(preset, jobs=2), tmp_path, seeds=1, only=only)
    assert result["failed"] == {} and result["done"][0] == "faster_rcnn-teacher-default-s0"
    saved = load_config(tmp_path / "runs" / "retinanet-teacher-default-s0" / "config.yaml")
    assert saved.model.weights == str(tmp_path / "runs" / "faster_rcnn-teacher-default-s0" / "best.safetensors")

    broken = replace(preset, teacher={**TINY.teacher, "faster_rcnn": ("model.backbone=no_such_net",)})
    result = run_sweep(broken, tmp_path / "broken", seeds=1, only=only)
    assert result["failed"]["retinanet-teacher-default-s0"] == "faster_rcnn-teacher-default-s0 did not finish"
