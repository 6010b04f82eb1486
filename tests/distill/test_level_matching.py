"""FPN imitation across differing strides: each student level imitates the teacher level of its
stride, or the nearest one resampled onto its grid; masks and losses are on the student's grid."""

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn

from tardistill.distill import Distiller
from tardistill.distill.adapters import LevelMatch, match_levels, teacher_on_student_grid
from tardistill.distill.methods import fgd, tar
from tardistill.distill.methods.registry import METHODS

R50_STRIDES = {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}
MOBILENET_STRIDES = {"0": 32, "1": 32, "pool": 64}
# A teacher at strides 8, 32, 64 (tiny_faster_rcnn(returned_layers=[2, 4])) against a student at
# 4..64: one level interpolated, one pooled, one matched by stride under another name, two by name.
SPARSE_TEACHER = {"0": 8, "1": 32, "pool": 64}
SPARSE_MATCHES = {"0": LevelMatch("0", 4, 8), "1": LevelMatch("0", 8, 8), "2": LevelMatch("0", 16, 8),
                  "3": LevelMatch("1", 32, 32), "pool": LevelMatch("pool", 64, 64)}
STUDENT_GRIDS = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # strides 4..64 on the 64 px batch


def test_both_mobilenet_stride_32_levels_imitate_the_r50_stride_32_level():
    assert match_levels(R50_STRIDES, MOBILENET_STRIDES) == {
        "0": LevelMatch("3", 32, 32), "1": LevelMatch("3", 32, 32), "pool": LevelMatch("pool", 64, 64)}
    # equal levels stay matched by name, even where two share a stride
    assert match_levels(MOBILENET_STRIDES, MOBILENET_STRIDES) == {
        name: LevelMatch(name, stride, stride) for name, stride in MOBILENET_STRIDES.items()}


def test_missing_strides_pool_from_the_nearest_finer_level_else_interpolate():
    matches = match_levels(SPARSE_TEACHER, R50_STRIDES)
    assert matches == SPARSE_MATCHES
    assert [m.resampling for m in matches.values()] == ["bilinear", "same", "pool", "same", "same"]
    # a stride-128 student level averages the stride-64 teacher level, the nearest that tiles it
    assert match_levels(R50_STRIDES, {"p7": 128}) == {"p7": LevelMatch("pool", 128, 64)}


def test_pooling_averages_each_student_cells_footprint():
    teacher = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = teacher_on_student_grid(teacher, LevelMatch("0", 8, 4), (2, 2))
    assert pooled.squeeze().tolist() == [[2.5, 4.5], [10.5, 12.5]]  # means of the 2 x 2 blocks
    # a padded batch's coarse level rounds up: the edge cell averages the teacher cells it has
    edge = teacher_on_student_grid(torch.arange(9.0).reshape(1, 1, 3, 3), LevelMatch("0", 8, 4), (2, 2))
    assert edge.squeeze().tolist() == [[2.0, 3.5], [6.5, 8.0]]


def test_interpolation_samples_the_student_cell_centres_and_crops():
    teacher = torch.tensor([[0.0, 4.0]]).reshape(1, 1, 1, 2)
    upsampled = teacher_on_student_grid(teacher, LevelMatch("0", 4, 8), (2, 3))
    # centres at 2, 6, 10 px sit at -0.25, 0.25, 0.75 teacher cells (clamped at the edge)
    assert upsampled.shape == (1, 1, 2, 3) and upsampled[0, 0, 0].tolist() == [0.0, 1.0, 3.0]
    same = torch.ones(1, 1, 2, 2)
    assert teacher_on_student_grid(same, LevelMatch("0", 8, 8), (2, 2)) is same


def test_masks_and_losses_are_on_the_student_levels_grid(monkeypatch):
    teacher, student = tiny_faster_rcnn(returned_layers=[2, 4], seed=1), tiny_faster_rcnn(fpn_channels=8)
    seen = {"gaussian": [], "fgd": [], "loss": []}

    def recording(name, function):
        def record(*args, **kwargs):
            result = function(*args, **kwargs)
            seen[name].append((args, kwargs, result))
            return result
        return record

    monkeypatch.setattr(tar, "gaussian_masks", recording("gaussian", tar.gaussian_masks))
    monkeypatch.setattr(tar, "fpn_imitation_loss", recording("loss", tar.fpn_imitation_loss))
    monkeypatch.setattr(fgd, "fgd_batch_masks", recording("fgd", fgd.fgd_batch_masks))
    distiller = Distiller(teacher, student)
    assert distiller.level_matches == SPARSE_MATCHES
    distiller(*tiny_batch())
    Distiller(teacher, student, method="fgd")(*tiny_batch())
    assert [kw["stride"] for _, kw, _ in seen["gaussian"]] == [4, 8, 16, 32, 64]
    assert [tuple(mask.shape[-2:]) for *_, mask in seen["gaussian"]] == STUDENT_GRIDS
    assert [kw["stride"] for _, kw, _ in seen["fgd"]] == [4, 8, 16, 32, 64]
    assert [tuple(fg.shape[-2:]) for *_, (fg, _) in seen["fgd"]] == STUDENT_GRIDS
    for (student_feat, teacher_feat, mask), _, _ in seen["loss"]:
        assert student_feat.shape == teacher_feat.shape and student_feat.shape[-2:] == mask.shape[-2:]


@pytest.mark.parametrize("method", [name for name in METHODS if name != "none"])
def test_every_method_runs_on_a_pair_with_differing_strides(method):
    teacher, student = tiny_faster_rcnn(returned_layers=[2, 4], seed=1), tiny_faster_rcnn(fpn_channels=8)
    distiller = Distiller(teacher, student, method=method)
    losses = distiller(*tiny_batch())
    assert any(key.startswith("kd/fgd") or key == "kd/fpn" for key in losses)
    assert all(torch.isfinite(value) for value in losses.values())
    weights = distiller.loss_weights(0, 10)
    sum(weights[k] * v for k, v in losses.items() if not k.startswith("stat/")).backward()
    grads = {name: conv.weight.grad for name, conv in distiller.adapters.convs.items()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads.values())
    # The 1 x 1 pool level can get none (CWD's softmax over one cell is constant), the pooled one must
    assert grads["2"].abs().sum() > 0
