"""bench reproduce: the plan, the per-run records, resuming, and failures that do not stop the sweep."""

import json
from dataclasses import replace

import pytest

from tardistill.bench.plan import BASELINES, CHOICES, COMPONENTS, SENSITIVITY, plan_runs, with_seeded_groups
from tardistill.bench.presets import PRESETS
from tardistill.bench.reproduce import load_records, run_sweep, settings_that_matter
from tardistill.config import Config, DistillConfig
from tardistill.errors import ConfigError

from tests.conftest import TINY_MODEL

TINY = replace(
    PRESETS["cpu"], name="tiny", datasets={"synth": dict(num_train=8, num_val=4, num_test=4, image_size=64)},
    pretrain={}, init_from={},
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
    for dataset in ("synth", "digits"):  # the headline rows on both datasets, 3 seeds for student and TAR
        main = {(r.method, r.seed) for r in runs if r.dataset == dataset and r.group == "main"}
        assert main == {(m, s) for m in ("none", "tar") for s in range(3)}
        baselines = {r.method for r in runs if r.dataset == dataset and r.group == "baselines"}
        assert baselines == set(BASELINES) - set(PRESETS["cpu"].dropped_baselines)
    synth_tar = {(r.variant, r.seed) for r in runs if r.dataset == "synth" and r.method == "tar"
                 and r.detector == "faster_rcnn"}
    assert {(name, 0) for name in (*COMPONENTS, *SENSITIVITY)} <= synth_tar
    # a dropped group is not planned; a preset that keeps it runs it
    assert "choices" in PRESETS["cpu"].dropped_groups and not any(r.group == "choices" for r in runs)
    assert {r.variant for r in plan_runs(PRESETS["gpu"], seeds=1) if r.group == "choices"} == set(CHOICES)
    assert {("full_linear_decay", s) for s in range(3)} <= synth_tar  # the decay verdict needs seeds
    assert not any(r.group == "tuned" for r in runs)
    # the baselines run seed 0; each dataset's best of them, once chosen, runs every seed, so the "level
    # with the best baseline" claim is decided on seeds
    assert {r.seed for r in runs if r.group == "baselines"} == {0}
    chosen = plan_runs(PRESETS["cpu"], seeds=3, best_baselines={"synth": "fgfi"})
    assert {(r.dataset, r.method, r.seed) for r in chosen if r.group == "baselines" and r.seed} == {
        ("synth", "fgfi", 1), ("synth", "fgfi", 2)}
    # a preset that seeds the whole baselines group has nothing to add
    assert plan_runs(PRESETS["gpu"], seeds=3, best_baselines={"synth": "fgd"}) == plan_runs(PRESETS["gpu"], seeds=3)
    assert {r.method for r in runs if r.detector == "retinanet"} == {"teacher", "none", "tar"}
    # the pretraining runs first, then the teachers: nothing is planned before what it depends on
    assert [r.method for r in runs[:2]] == ["pretrain", "pretrain"]
    for index, spec in enumerate(runs):
        assert set(spec.dependencies(PRESETS["cpu"])) <= set(keys[:index]), spec.key
    # the Faster R-CNN runs that need no teacher come before all that do: they fill the free slots while
    # the teachers train (RetinaNet's runs come last, as a group)
    frcnn = [r for r in runs if r.detector == "faster_rcnn"]
    first_needing_teacher = next(i for i, r in enumerate(frcnn) if r.needs_teacher)
    assert all(r.needs_teacher for r in frcnn[first_needing_teacher:])


def test_sensitivity_rows_scale_each_weight_from_its_shipped_default():
    defaults = DistillConfig()
    for key in ("fpn_weight", "cls_weight", "reg_weight"):
        for factor in (0.3, 3.0):
            assert SENSITIVITY[f"{key}x{factor:g}"] == (f"distill.{key}={factor * getattr(defaults, key):g}",)
    assert SENSITIVITY["cls_weightx3"] == ("distill.cls_weight=9",)  # 3x the default of 3, not 3


def test_every_run_starts_from_its_roles_pretrained_backbone(tmp_path):
    from tardistill.bench.reproduce import run_config

    preset = PRESETS["cpu"]
    runs = plan_runs(preset, seeds=1)
    pretrain = {r.variant: r for r in runs if r.method == "pretrain"}
    for spec in runs:
        config = run_config(spec, preset, tmp_path)
        if spec.method == "pretrain":
            assert config.model.backbone_weights is None and config.data.root.endswith("shapes")
        else:
            expected = tmp_path / "runs" / pretrain[spec.role].key / "best.safetensors"
            assert config.model.backbone_weights == str(expected), spec.key
            assert config.data.root.endswith(spec.dataset)


def test_sweep_writes_records_and_resumes(tmp_path):
    only = ["synth-faster_rcnn-teacher", "synth-faster_rcnn-none-student-s0", "synth-faster_rcnn-tar-full-s0"]
    first = run_sweep(TINY, tmp_path, seeds=1, only=only)
    assert first["failed"] == {} and len(first["done"]) == 3
    records = {r["key"]: r for r in load_records(tmp_path)}
    tar = records["synth-faster_rcnn-tar-full-s0"]
    assert (tar["method"], tar["variant"], tar["seed"], tar["iterations"]) == ("tar", "full", 0, 2)
    assert 0 <= tar["ap"] <= 1 and tar["wall_s"] > 0 and tar["val_curve"]
    assert tar["started"] <= tar["finished"] and tar["dataset"] == "synth" and len(tar["load_avg"]) == 2
    assert records["synth-faster_rcnn-teacher-default-s0"]["method"] == "teacher"
    second = run_sweep(TINY, tmp_path, seeds=1, only=only)
    assert second["done"] == [] and sorted(second["skipped"]) == sorted(records)


def test_a_failed_teacher_fails_its_students_and_writes_no_record(tmp_path):
    broken = replace(TINY, teacher={**TINY.teacher, "faster_rcnn": ("model.backbone=no_such_net",)})
    result = run_sweep(broken, tmp_path, seeds=1, only=["synth-faster_rcnn-teacher", "synth-faster_rcnn-tar-full-s0"])
    assert "no_such_net" in result["failed"]["synth-faster_rcnn-teacher-default-s0"]
    assert "did not finish" in result["failed"]["synth-faster_rcnn-tar-full-s0"]
    assert load_records(tmp_path) == []
    assert json.loads(json.dumps(result))  # the summary is plain data


def test_a_changed_tar_default_matters_to_tar_runs_only():
    def with_distill(**distill):
        return replace(Config(), distill=replace(DistillConfig(), **distill))

    def same(a, b):
        return settings_that_matter(a) == settings_that_matter(b)

    assert same(with_distill(), with_distill(cls_weight=0.5))  # no teacher: the student alone
    assert same(with_distill(teacher="t.pt", method="pkd"), with_distill(teacher="t.pt", method="pkd", cls_weight=0.5))
    assert not same(with_distill(teacher="t.pt"), with_distill(teacher="t.pt", cls_weight=0.5))
    assert not same(with_distill(teacher="t.pt", method="pkd"), with_distill(teacher="t.pt", method="cwd"))
    # a term switched off reads none of its options: the mask of a run without the FPN term, say
    no_fpn = dict(teacher="t.pt", fpn_weight=0.0)
    assert same(with_distill(**no_fpn), with_distill(**no_fpn, beta=0.5, truncate=True, fpn_norm="sum"))
    assert not same(with_distill(**no_fpn), with_distill(**no_fpn, tau=2.0))
    assert same(with_distill(teacher="t.pt", cls_weight=0.0), with_distill(teacher="t.pt", cls_weight=0.0, tau=2.0))
    assert not same(with_distill(teacher="t.pt"), with_distill(teacher="t.pt", beta=0.5))


def test_a_changed_preset_sets_stale_runs_aside_and_reruns_them(tmp_path):
    only = ["synth-faster_rcnn-teacher", "synth-faster_rcnn-tar-full-s0"]
    run_sweep(TINY, tmp_path, seeds=1, only=only)
    changed = replace(TINY, tar=("distill.cls_weight=0.5",))
    result = run_sweep(changed, tmp_path, seeds=1, only=only)
    assert result["done"] == ["synth-faster_rcnn-tar-full-s0"]  # the teacher's config did not change
    (stale,) = (tmp_path / "stale").iterdir()
    assert stale.name.startswith("synth-faster_rcnn-tar-full-s0-")
    assert (stale / "synth-faster_rcnn-tar-full-s0" / "best.safetensors").is_file()
    assert (stale / "synth-faster_rcnn-tar-full-s0.json").is_file()
    records = {r["key"]: r for r in load_records(tmp_path)}
    assert set(records) == {"synth-faster_rcnn-teacher-default-s0", "synth-faster_rcnn-tar-full-s0"}


def test_init_from_starts_a_run_from_another_runs_weights_and_waits_for_it(tmp_path):
    from tardistill.config import load_config

    preset = replace(TINY, init_from={"retinanet": {"teacher": "synth-faster_rcnn-teacher-default-s0"}})
    only = ["synth-faster_rcnn-teacher", "synth-retinanet-teacher"]
    result = run_sweep(replace(preset, jobs=2), tmp_path, seeds=1, only=only)
    assert result["failed"] == {} and result["done"][0] == "synth-faster_rcnn-teacher-default-s0"
    saved = load_config(tmp_path / "runs" / "synth-retinanet-teacher-default-s0" / "config.yaml")
    assert saved.model.weights == str(tmp_path / "runs" / "synth-faster_rcnn-teacher-default-s0" / "best.safetensors")

    broken = replace(preset, teacher={**TINY.teacher, "faster_rcnn": ("model.backbone=no_such_net",)})
    result = run_sweep(broken, tmp_path / "broken", seeds=1, only=only)
    assert result["failed"]["synth-retinanet-teacher-default-s0"] == "synth-faster_rcnn-teacher-default-s0 did not finish"


def test_the_last_seed0_baseline_to_finish_adds_the_best_baselines_seeds(tmp_path):
    one_baseline = replace(TINY, dropped_baselines=tuple(m for m in BASELINES if m != "fgfi"))
    only = ["synth-faster_rcnn-teacher", "fgfi", "fpn_weightx0.3"]
    result = run_sweep(one_baseline, tmp_path, seeds=2, only=only)
    assert result["failed"] == {}
    # the added seed takes its place in the priority order, before the sensitivity row planned from the start
    assert result["done"] == ["synth-faster_rcnn-teacher-default-s0", "synth-faster_rcnn-fgfi-default-s0",
                              "synth-faster_rcnn-fgfi-default-s1", "synth-faster_rcnn-tar-fpn_weightx0.3-s0"]


def test_a_pretrained_backbone_is_trained_first_and_loaded_by_its_role(tmp_path):
    preset = replace(TINY, pretrain={"student": 2})
    only = ["pretrain-student", "synth-faster_rcnn-none-student-s0"]
    result = run_sweep(preset, tmp_path, seeds=1, only=only)
    assert result["failed"] == {} and result["done"][0] == "shapes-faster_rcnn-pretrain-student-s0"
    records = {r["key"]: r for r in load_records(tmp_path)}
    assert records["shapes-faster_rcnn-pretrain-student-s0"]["dataset"] == "shapes"
    assert (tmp_path / "data" / "shapes" / "annotations" / "train.json").is_file()


def test_cpu_fp32_is_the_cpu_preset_in_fp32():
    cpu, fp32 = PRESETS["cpu"], PRESETS["cpu_fp32"]
    for kind, overrides in cpu.overrides.items():
        assert [o for o in fp32.overrides[kind] if o != "train.amp=off"] == [o for o in overrides
                                                                            if o != "train.amp=bf16"]
        assert "train.amp=off" in fp32.overrides[kind]
    assert [r.key for r in plan_runs(fp32, seeds=3)] == [r.key for r in plan_runs(cpu, seeds=3)]
    assert replace(fp32, name="cpu", overrides=cpu.overrides) == cpu


def test_seed_group_runs_a_groups_rows_for_every_seed():
    seeded = with_seeded_groups(PRESETS["cpu"], ["retinanet"])
    retina = {(r.method, r.seed) for r in plan_runs(seeded, seeds=3) if r.detector == "retinanet"}
    assert retina == {("teacher", 0)} | {(m, s) for m in ("none", "tar") for s in range(3)}
    assert with_seeded_groups(PRESETS["cpu"], ["main"]) is PRESETS["cpu"]  # seeded already
    with pytest.raises(ConfigError, match="sensitivity"):
        with_seeded_groups(PRESETS["cpu"], ["sensitivity"])  # its rows are seed 0 by design

def test_the_sweep_knows_when_its_bf16_runs_would_be_emulated(monkeypatch):
    from tardistill.bench.reproduce import forces_emulated_bf16
    from tardistill.engine import setup

    monkeypatch.setattr(setup, "cpu_computes_bf16", lambda: False)
    assert forces_emulated_bf16(PRESETS["cpu"]) is True
    assert forces_emulated_bf16(PRESETS["gpu"]) is False  # its runs ask for amp auto, fp32 on a CPU
    monkeypatch.setattr(setup, "cpu_computes_bf16", lambda: True)
    assert forces_emulated_bf16(PRESETS["cpu"]) is False
