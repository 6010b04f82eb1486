"""Distillation cost measurements run and report consistent numbers."""

import pytest

from tardistill.bench.distill_cost import measure_peak_memory, measure_step_times
from tardistill.config import load_config


@pytest.fixture()
def config(tiny_overrides, untrained_teacher):
    return load_config(None, [*tiny_overrides, f"distill.teacher={untrained_teacher}", "distill.fpn_weight=0.01"])


def test_step_times(config):
    result = measure_step_times(config, repeats=1, warmup=1)
    assert all(result[k] > 0 for k in ("student_step_s", "teacher_forward_s", "distill_step_s"))
    expected = result["distill_step_s"] / (result["student_step_s"] + result["teacher_forward_s"])
    assert result["ratio"] == pytest.approx(expected)


def test_peak_memory_in_fresh_processes(config):
    result = measure_peak_memory(config, steps=1)
    assert 100 < result["student_peak_mib"] < 20_000
    assert result["ratio"] == pytest.approx(result["distill_peak_mib"] / result["student_peak_mib"])


def test_step_times_train_under_the_configs_precision(config):
    """The timings are those of a real run: train.amp=bf16 autocasts on the CPU as `fit` does."""
    assert measure_step_times(config, repeats=1, warmup=0)["bf16"] is False  # auto: fp32 on a CPU
    config.train.amp = "bf16"
    assert measure_step_times(config, repeats=1, warmup=0)["bf16"] is True
