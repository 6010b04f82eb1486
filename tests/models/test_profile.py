"""Profiling: peak inference memory in a fresh process, and `profile` of a config's teacher and student."""

import functools

import pytest
import torch
from torch import nn

from tests.conftest import TINY_MODEL
from tardistill import commands
from tardistill.config import load_config, save_config
from tardistill.models.profile import peak_inference_mib, profile_detector

SCRATCH_MIB = 256


class AllocatesDuringInference(nn.Module):
    """Holds `weights_mib` of weights, and fills SCRATCH_MIB of scratch memory per call."""

    def __init__(self, weights_mib: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(weights_mib * 2**20 // 4))

    def forward(self, images):
        scratch = torch.ones(SCRATCH_MIB * 2**20 // 4)  # ones, not empty: the pages are touched
        return [{"sum": scratch.sum() + self.weight[0]} for _ in images]


def test_peak_memory_counts_weights_and_activations_not_loading():
    peak = peak_inference_mib(functools.partial(AllocatesDuringInference, 64), image_size=8)
    # 64 MiB of weights + 256 MiB of scratch; the ones() that builds the weights first lives in a
    # temporary that is freed before inference, and torch's own footprint is left out.
    assert 64 + SCRATCH_MIB - 1 <= peak <= 64 + SCRATCH_MIB + 48, peak


def test_profile_detector_reports_cost_with_few_repeats():
    from tardistill.engine.setup import detector_from_config

    config = load_config(None, TINY_MODEL)
    row = profile_detector(detector_from_config(config.model, 3), image_size=64, repeats=1)
    assert set(row) == {"params_M", "gflops", "cpu_ms_batch1", "cpu_ms_batch8"}
    assert all(value > 0 for value in row.values())


def test_profile_of_a_config_puts_teacher_and_student_side_by_side(untrained_teacher, tiny_synth, tmp_path):
    path = tmp_path / "distill.yaml"
    save_config(load_config(None, [*TINY_MODEL, f"data.root={tiny_synth}", f"distill.teacher={untrained_teacher}"]),
                path)
    rows = commands.profile([path], [], repeats=1)
    teacher, student = rows[f"teacher: {untrained_teacher}"], rows[f"student: {path}"]
    assert list(rows) == [f"teacher: {untrained_teacher}", f"student: {path}"]
    # the fixture's teacher is twice as wide (width 0.25, 32 FPN channels against 0.125 and 16)
    assert teacher["params_M"] > student["params_M"] and teacher["gflops"] > student["gflops"]
    assert teacher["peak_mib_batch1"] > student["peak_mib_batch1"] > 0
    table = commands.format_profile(rows)
    assert "peak MiB (batch 1)" in table and "student:" in table.splitlines()[-1]


def test_profile_of_a_missing_teacher_is_one_line_error(tmp_path):
    from tardistill.errors import TardistillError

    path = tmp_path / "distill.yaml"
    save_config(load_config(None, [*TINY_MODEL, f"distill.teacher={tmp_path / 'nope.safetensors'}"]), path)
    with pytest.raises(TardistillError, match="nope.safetensors: checkpoint not found"):
        commands.profile([path], [], repeats=1)
