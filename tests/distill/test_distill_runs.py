"""`tardistill distill` end to end on tiny data: the saved student is a plain torchvision detector."""

import json

import pytest
import yaml

from tardistill.commands import distill, train
from tardistill.engine.setup import load_detector
from tardistill.config import load_config
from tardistill.distill.pair import TAR_FLAT_KEYS, check_distill_config
from tardistill.distill.runs import train_student
from tardistill.errors import ConfigError, TardistillError
from tardistill.models.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny_synth):
    from tests.conftest import TINY_MODEL

    out = tmp_path_factory.mktemp("teacher")
    overrides = [*TINY_MODEL, "model.width_multiplier=0.25", "model.fpn_channels=32", f"data.root={tiny_synth}",
                 "train.iterations=2", "train.batch_size=2", "train.eval_every=0", "train.warmup_iterations=1"]
    train(None, overrides, out)
    return out / "final.safetensors"


def test_distill_saves_the_student_alone(tmp_path, tiny_overrides, tiny_teacher):
    result = distill(None, [*tiny_overrides, f"distill.teacher={tiny_teacher}", "distill.fpn_weight=0.01",
                                       "distill.decay=linear"], tmp_path)
    tensors, meta = load_checkpoint(result["checkpoint"])
    assert meta["role"] == "student" and not any("adapter" in k or k.startswith("teacher") for k in tensors)
    student, _ = load_detector(result["checkpoint"])  # loads strictly into a plain torchvision model
    assert type(student).__name__ == "FasterRCNN"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_keys = set(records[0])
    assert {"kd/fpn", "kd/cls", "kd/reg", "stat/decay_w", "stat/cls_gate_rate", "stat/reg_gate_rate"} <= train_keys
    # linear decay: the record of step k holds w(t) of the update it logs, t = k - 1
    assert [r["stat/decay_w"] for r in records if r["kind"] == "train"] == pytest.approx([1, 0.75, 0.5, 0.25])


def test_mismatched_classes_rejected_before_training(tmp_path, tiny_overrides, tiny_teacher):
    tensors, meta = load_checkpoint(tiny_teacher)
    meta["classes"] = meta["classes"][:-1] + ["dragon"]
    other = save_checkpoint(tmp_path / "other.safetensors", tensors, meta)
    with pytest.raises(ConfigError, match="dragon"):
        distill(None, [*tiny_overrides, f"distill.teacher={other}"], tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_missing_teacher_is_a_config_error(tmp_path, tiny_overrides):
    with pytest.raises(ConfigError, match="distill.teacher"):
        distill(None, tiny_overrides, tmp_path)


def test_overwrite_with_a_missing_teacher_leaves_the_old_run_in_place(tmp_path, tiny_overrides, tiny_teacher):
    out = tmp_path / "run"
    distill(None, [*tiny_overrides, f"distill.teacher={tiny_teacher}"], out)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(TardistillError, match="no_teacher.safetensors: checkpoint not found"):
        train_student(load_config(None, [*tiny_overrides, f"distill.teacher={tmp_path / 'no_teacher.safetensors'}"]),
                      out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before and (out / "result.json").is_file()
    assert not list(tmp_path.glob("run.replaced-*"))


def test_saved_config_of_another_method_leaves_tar_options_out(tmp_path, tiny_overrides, tiny_teacher):
    """TAR's flat keys must sit at their defaults under another method; saved at the defaults of the
    day, a later change of a TAR default would make the saved file fail to rerun, so they stay out."""
    distill(None, [*tiny_overrides, "train.iterations=2", f"distill.teacher={tiny_teacher}", "distill.method=fgd"],
            tmp_path / "fgd")
    saved = tmp_path / "fgd" / "config.yaml"
    assert not set(TAR_FLAT_KEYS) & set(yaml.safe_load(saved.read_text())["distill"])
    config = load_config(saved)
    assert config.distill.method == "fgd"
    check_distill_config(config)  # the saved file reruns as it is


def test_saved_config_of_tar_keeps_its_options(tmp_path, tiny_overrides, tiny_teacher):
    distill(None, [*tiny_overrides, "train.iterations=2", f"distill.teacher={tiny_teacher}",
                   "distill.fpn_weight=0.5"], tmp_path / "tar")
    saved = yaml.safe_load((tmp_path / "tar" / "config.yaml").read_text())["distill"]
    assert set(TAR_FLAT_KEYS) <= set(saved) and saved["fpn_weight"] == 0.5
