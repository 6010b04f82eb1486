"""PKD: hand-computed values on tiny maps, 0 for an identical student, and both detector kinds."""

import copy

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet

from tardistill.distill import Distiller
from tardistill.distill.methods.pkd import PKD, pkd_loss

BUILDERS = {"faster_rcnn": tiny_faster_rcnn, "retinanet": tiny_retinanet}


def test_anticorrelated_channel_hand_computed():
    student = torch.tensor([[[[0.0, 1.0]]]])  # [N=1, C=1, H=1, W=2]
    teacher = torch.tensor([[[[1.0, 0.0]]]])
    # mean 0.5, unbiased std sqrt(0.5): z(S) = (-0.7071, 0.7071) = -z(T); (2 * 1.4142^2 / 2 cells) / 2 = 1
    assert pkd_loss(student, teacher).item() == pytest.approx(1.0, rel=1e-5)


def test_partly_correlated_channels_hand_computed():
    # channel 0: S = (0, 1, 2), T = (0, 2, 1): mean 1, unbiased std 1, z(S) - z(T) = (0, -1, 1);
    # channel 1 identical. (0 + 1 + 1 + 0 + 0 + 0) / 6 values / 2 = 1/6
    student = torch.tensor([[[[0.0, 1.0, 2.0]], [[5.0, 1.0, 3.0]]]])  # [N=1, C=2, H=1, W=3]
    teacher = torch.tensor([[[[0.0, 2.0, 1.0]], [[5.0, 1.0, 3.0]]]])
    assert pkd_loss(student, teacher).item() == pytest.approx(1 / 6, rel=1e-5)


def test_a_single_cell_per_channel_counts_as_constant():
    # one image, a 1 x 1 level: the unbiased deviation of one value is nan
    student = torch.tensor([[[[2.0]], [[-1.0]]]], requires_grad=True)  # [N=1, C=2, H=1, W=1]
    loss = pkd_loss(student, torch.tensor([[[[5.0]], [[3.0]]]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_scale_and_offset_do_not_matter_and_the_teacher_gets_no_gradient():
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    student = (3.0 * teacher.detach() + 2.0).requires_grad_(True)
    loss = pkd_loss(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_default_weights_are_mmrazors_per_kind_and_settable():
    assert PKD().loss_weights("faster_rcnn") == {"kd/fpn": 6.0}
    assert PKD().loss_weights("retinanet") == {"kd/fpn": 10.0}
    assert PKD(fpn_weight=1.0).loss_weights("retinanet") == {"kd/fpn": 1.0}


@pytest.mark.parametrize("kind", BUILDERS)
def test_zero_for_an_identical_student_and_training_otherwise(kind):
    student = BUILDERS[kind]()
    identical = Distiller(copy.deepcopy(student), student, method="pkd")
    identical.adapters.identity_init()
    assert identical(*tiny_batch())["kd/fpn"].item() == 0.0
    distiller = Distiller(BUILDERS[kind](seed=1), BUILDERS[kind](fpn_channels=8), method="pkd")
    losses = distiller(*tiny_batch())
    assert losses["kd/fpn"].item() > 0 and distiller.decay == "constant"
    distiller.weighted_total(losses, 0, 10)[0].backward()
    assert distiller.adapters.convs["0"].weight.grad.abs().sum() > 0
