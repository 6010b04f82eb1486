"""CWD: hand-computed values on tiny maps, 0 for an identical student, and both detector kinds."""

import copy
import math

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet

from tardistill.distill import Distiller
from tardistill.distill.methods.cwd import CWD, cwd_loss

BUILDERS = {"faster_rcnn": tiny_faster_rcnn, "retinanet": tiny_retinanet}


def test_one_channel_hand_computed():
    teacher = torch.zeros(1, 1, 1, 2)  # p_T = (1/2, 1/2)
    student = torch.tensor([[[[0.0, math.log(3.0)]]]])  # p_S = (1/4, 3/4)
    # KL = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3) = 0.143841
    assert cwd_loss(student, teacher).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_channels_are_averaged_and_tau_squared_scales():
    # a second, identical channel halves the value: the sum is divided by N * C = 2
    teacher = torch.zeros(1, 2, 1, 2)
    student = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    assert cwd_loss(student, teacher).item() == pytest.approx(0.25 * math.log(4 / 3), rel=1e-6)
    # tau 2: p_S = softmax(0, ln 3 / 2) = (1, sqrt 3) / (1 + sqrt 3); KL from (1/2, 1/2), times 4, / 2
    p = 1 / (1 + math.sqrt(3))
    kl = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    assert cwd_loss(student, teacher, tau=2.0).item() == pytest.approx(4 * kl / 2, rel=1e-6)


def test_zero_at_equality_and_the_teacher_gets_no_gradient():
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    loss = cwd_loss(student, teacher, tau=1.5)
    assert loss.item() == 0.0
    (loss + cwd_loss(student * 2, teacher)).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_defaults_are_mmrazors():
    assert (CWD().tau, CWD().loss_weights("retinanet")) == (1.0, {"kd/fpn": 10.0})


@pytest.mark.parametrize("kind", BUILDERS)
def test_zero_for_an_identical_student_and_training_otherwise(kind):
    student = BUILDERS[kind]()
    identical = Distiller(copy.deepcopy(student), student, method="cwd")
    identical.adapters.identity_init()
    assert identical(*tiny_batch())["kd/fpn"].item() == 0.0
    distiller = Distiller(BUILDERS[kind](seed=1), BUILDERS[kind](fpn_channels=8), method="cwd", tau=2.0)
    losses = distiller(*tiny_batch())
    assert losses["kd/fpn"].item() > 0 and distiller.decay == "constant"
    distiller.weighted_total(losses, 0, 10)[0].backward()
    assert distiller.adapters.convs["0"].weight.grad.abs().sum() > 0
