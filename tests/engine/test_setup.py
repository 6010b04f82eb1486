"""Rebuilding a detector from a checkpoint: the model keys eval and predict may change, and those they may not;
the precision a run trains in."""

import pytest
import torch

from tardistill.engine.setup import load_detector
from tardistill.errors import ConfigError


def test_inference_keys_are_applied_to_the_checkpoints_detector(untrained_teacher):
    detector, _ = load_detector(untrained_teacher, model_keys={"score_threshold": 0.9, "detections_per_image": 7,
                                                               "min_size": 96, "max_size": 96})
    assert detector.roi_heads.score_thresh == 0.9 and detector.roi_heads.detections_per_img == 7
    assert detector.transform.min_size == (96,) and detector.transform.max_size == 96


def test_a_key_the_checkpoint_fixes_is_refused_unless_it_agrees(untrained_teacher):
    load_detector(untrained_teacher, model_keys={"backbone": "resnet18"})  # what the checkpoint holds: fine
    with pytest.raises(ConfigError, match=f"model.backbone: {untrained_teacher} holds a model with backbone "
                                          "'resnet18', not 'resnet101'; its architecture is fixed, only "
                                          "model.score_threshold, .* can be changed for it"):
        load_detector(untrained_teacher, model_keys={"backbone": "resnet101"})


def test_forced_bf16_on_a_cpu_without_it_runs_as_asked_and_says_it_is_slow(monkeypatch, caplog):
    from tardistill.engine import setup

    assert isinstance(setup.cpu_computes_bf16(), bool)  # this machine's answer, whichever it is
    cpu = torch.device("cpu")
    monkeypatch.setattr(setup, "cpu_computes_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="tardistill.engine.setup"):
        assert setup.use_bf16("bf16", cpu) is True
        assert setup.use_bf16("auto", cpu) is False and setup.use_bf16("off", cpu) is False
    assert len(caplog.records) == 1 and "set train.amp=off on this machine" in caplog.text
    caplog.clear()
    monkeypatch.setattr(setup, "cpu_computes_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="tardistill.engine.setup"):
        assert setup.use_bf16("bf16", cpu) is True
    assert not caplog.records
