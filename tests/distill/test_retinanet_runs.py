"""`tardistill distill` end to end for RetinaNet on tiny data: the saved student is a plain RetinaNet."""

import json

import pytest

from tardistill.commands import distill, train
from tardistill.engine.setup import load_detector
from tardistill.errors import ConfigError
from tardistill.models.checkpoint import load_checkpoint

RETINANET = ["model.kind=retinanet", "train.iterations=2", "train.eval_every=0", "train.checkpoint_every=0"]


@pytest.fixture(scope="module")
def tiny_retina_teacher(tmp_path_factory, tiny_synth):
    from tests.conftest import TINY_MODEL

    out = tmp_path_factory.mktemp("retina_teacher")
    overrides = [*TINY_MODEL, *RETINANET, "model.width_multiplier=0.25", "model.fpn_channels=32",
                 f"data.root={tiny_synth}", "train.batch_size=2", "train.warmup_iterations=1"]
    train(None, overrides, out)
    return out / "final.safetensors"


def test_distill_retinanet_saves_the_student_alone(tmp_path, tiny_overrides, tiny_retina_teacher):
    result = distill(None, [*tiny_overrides, *RETINANET, f"distill.teacher={tiny_retina_teacher}",
                            "distill.fpn_weight=0.01", "distill.decay=linear"], tmp_path)
    tensors, meta = load_checkpoint(result["checkpoint"])
    assert meta["role"] == "student" and not any("adapter" in k or k.startswith("teacher") for k in tensors)
    student, _ = load_detector(result["checkpoint"])  # loads strictly into a plain torchvision model
    assert type(student).__name__ == "RetinaNet"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert {"det/classification", "det/bbox_regression", "kd/fpn", "kd/cls", "kd/reg", "stat/decay_w",
            "stat/cls_gate_rate", "stat/reg_gate_rate"} <= set(train_records[0])
    assert [r["stat/decay_w"] for r in train_records] == pytest.approx([1, 0.5])


def test_mismatched_anchor_grid_rejected_before_training(tmp_path, tiny_overrides, tiny_retina_teacher):
    overrides = [*tiny_overrides, *RETINANET, f"distill.teacher={tiny_retina_teacher}",
                 "model.anchor_sizes=[16,32,64,128,256]"]
    with pytest.raises(ConfigError, match="anchor sizes: teacher"):
        distill(None, overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
