import copy
import math

import pytest
import torch

from tardistill.distill.decay import DECAYS
from tardistill.distill.global_context import GlobalContextBlock
from tardistill.distill.methods.chen2017 import (
    Chen2017, chen_bounded_reg_loss, chen_cls_loss, chen_hint_loss, chen_teacher_bounded)
from tardistill.distill.methods.fgd import FGD, fgd_attention, fgd_attention_loss, fgd_focal_loss, fgd_global_loss
from tardistill.distill.methods.fgfi import FGFI, fgfi_loss
from tardistill.distill.methods.fitnet import fitnet_loss
from tardistill.distill.methods.registry import METHODS


def test_fitnet_and_hint_hand_computed_and_zero_at_equality():
    student = torch.tensor([[[[1.0, 3.0]]]])  # [N=1, C=1, H=1, W=2]
    # (1 + 9) / (2 * 2 cells) = 2.5
    assert fitnet_loss(student, torch.zeros(1, 1, 1, 2)).item() == 2.5
    assert chen_hint_loss(student, torch.zeros(1, 1, 1, 2)).item() == 2.5
    feats = torch.randn(2, 3, 4, 4)
    assert fitnet_loss(feats, feats.clone()).item() == 0.0


def test_fgfi_loss_hand_computed_and_zero_at_equality():
    student = torch.tensor([[[[1.0, 3.0]]]])
    # only the first cell is masked: 1 / (2 * 1) = 0.5
    assert fgfi_loss(student, torch.zeros(1, 1, 1, 2), torch.tensor([[[1.0, 0.0]]])).item() == 0.5
    feats = torch.randn(2, 3, 4, 4)
    assert fgfi_loss(feats, feats.clone(), (torch.rand(2, 4, 4) > 0.5).float()).item() == 0.0


def test_chen_cls_loss_hand_computed():
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_T = (0.75, 0.25); p_S = (0.5, 0.5)
    labels = torch.tensor([1])
    # hard: -ln 0.5 = 0.693147; soft: -(1.5 * 0.75 + 0.25) ln 0.5 = 1.375 * 0.693147 = 0.953077
    # mu 0.5: (0.693147 + 0.953077) / 2 = 0.823112
    assert math.isclose(chen_cls_loss(student, teacher, labels).item(), 0.823112, rel_tol=1e-5)
    # mu 1: the hard CE alone; background weight 1 and mu 0: the plain soft CE 0.693147
    assert math.isclose(chen_cls_loss(student, teacher, labels, mu=1.0).item(), 0.693147, rel_tol=1e-5)
    plain = chen_cls_loss(student, teacher, labels, mu=0.0, background_weight=1.0)
    assert math.isclose(plain.item(), 0.693147, rel_tol=1e-5)


def test_chen_soft_term_is_stationary_at_the_teacher_only_without_class_weight():
    teacher = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    # background weight 1: at z_S = z_T the soft CE is the teacher's entropy and its gradient is 0
    student = teacher.clone().requires_grad_(True)
    soft = chen_cls_loss(student, teacher, labels, mu=0.0, background_weight=1.0)
    p = teacher.softmax(dim=1)
    assert torch.isclose(soft, -(p * p.log()).sum(dim=1).mean(), rtol=1e-5)
    soft.backward()
    assert student.grad.abs().max().item() < 1e-6
    # background weight 1.5: dL/dz_j = p_S,j sum_c w_c p_T,c - w_j p_T,j is 0 where
    # p_S is proportional to w * p_T, i.e. at z_S = z_T + ln w (background + ln 1.5)
    shifted = teacher.clone()
    shifted[:, 0] += math.log(1.5)
    shifted.requires_grad_(True)
    chen_cls_loss(shifted, teacher, labels, mu=0.0).backward()
    assert shifted.grad.abs().max().item() < 1e-6


def test_chen_cls_loss_empty_is_zero_and_keeps_graph():
    student = torch.zeros(0, 3, requires_grad=True)
    loss = chen_cls_loss(student, torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0 and loss.requires_grad


def test_chen_bounded_reg_loss_only_where_the_student_is_worse():
    target = torch.zeros(2, 4)
    # row 0: student error 1, teacher error 0.25 + 0.25 = 0.5 -> active, adds 1
    # row 1: student error 0.01 < teacher 0.5 -> already better, adds 0
    student = torch.tensor([[1.0, 0, 0, 0], [0.1, 0, 0, 0]], requires_grad=True)
    teacher = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]])
    assert chen_teacher_bounded(student, teacher, target).tolist() == [True, False]
    loss = chen_bounded_reg_loss(student, teacher, target)
    assert math.isclose(loss.item(), 0.5, rel_tol=1e-6)  # (1 + 0) / 2 positive RoIs
    loss.backward()
    # d/dS of ||S - y||^2 / 2 = (S - y) on the active row, 0 on the other
    assert torch.allclose(student.grad, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
    # margin 0.6: row 1 has 0.01 + 0.6 > 0.5 -> active too: (1 + 0.01) / 2
    with_margin = chen_bounded_reg_loss(student, teacher, target, margin=0.6)
    assert math.isclose(with_margin.item(), 0.505, rel_tol=1e-6)


def test_chen_bounded_reg_loss_zero_when_student_better_and_when_empty():
    target = torch.randn(3, 4)
    assert chen_bounded_reg_loss(target.clone(), target + 1, target).item() == 0.0
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = chen_bounded_reg_loss(empty, torch.zeros(0, 4), torch.zeros(0, 4))
    assert loss.item() == 0.0 and loss.requires_grad


def test_fgd_attention_hand_computed():
    # |F|: channel 0 = (1, 3), channel 1 = (1, 1); N = 1, C = 2, H = 1, W = 2
    feat = torch.tensor([[[[1.0, -3.0]], [[1.0, 1.0]]]])
    spatial, channel = fgd_attention(feat, temperature=0.5)
    # cells: channel means (1, 2) / 0.5 = (2, 4); softmax = (1, e^2) / (1 + e^2) = (0.119203, 0.880797);
    # times H * W = 2
    assert spatial.shape == (1, 1, 2)
    assert torch.allclose(spatial, torch.tensor([[[0.238406, 1.761594]]]), atol=1e-6)
    # channels: cell means (2, 1) / 0.5 = (4, 2); softmax = (0.880797, 0.119203); times C = 2
    assert torch.allclose(channel, torch.tensor([[1.761594, 0.238406]]), atol=1e-6)


def test_fgd_focal_loss_hand_computed_and_zero_at_equality():
    student = torch.tensor([[[[1.0, 2.0]]]])  # squared errors (1, 4) against a zero teacher
    teacher = torch.zeros(1, 1, 1, 2)
    spatial, channel = torch.tensor([[[1.5, 0.5]]]), torch.tensor([[1.0]])
    fg, bg = torch.tensor([[[0.5, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    # fg: 0.5 * 1.5 * 1 * 1 = 0.75; bg: 1 * 0.5 * 1 * 4 = 2; alpha 1, beta 10: 0.75 + 20 = 20.75
    loss = fgd_focal_loss(student, teacher, fg, bg, spatial, channel, alpha=1.0, beta=10.0)
    assert math.isclose(loss.item(), 20.75, rel_tol=1e-6)
    # a sum over images divided by N: two copies of the image give the same value
    pair = [x.expand(2, *x.shape[1:]) for x in (student, teacher, fg, bg, spatial, channel)]
    twice = fgd_focal_loss(*pair, alpha=1.0, beta=10.0)
    assert math.isclose(twice.item(), 20.75, rel_tol=1e-6)
    feats = torch.randn(2, 3, 4, 4)
    spatial, channel = fgd_attention(feats)
    assert fgd_focal_loss(feats, feats.clone(), torch.rand(2, 4, 4), torch.rand(2, 4, 4), spatial,
                          channel).item() == 0.0


def test_fgd_attention_loss_hand_computed_and_zero_at_equality():
    # spatial |(1, 1) - (1.5, 0.5)| = 1; channel |(1.2, 0.8) - (1, 1)| = 0.4; gamma 2: 2.8
    loss = fgd_attention_loss(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[1.2, 0.8]]),
                              torch.tensor([[[1.5, 0.5]]]), torch.tensor([[1.0, 1.0]]), gamma=2.0)
    assert math.isclose(loss.item(), 2.8, rel_tol=1e-6)
    spatial, channel = fgd_attention(torch.randn(2, 3, 4, 4))
    assert fgd_attention_loss(spatial, channel, spatial.clone(), channel.clone()).item() == 0.0


def test_fgd_global_loss_hand_computed():
    # R(S) = (1, 2) + 0.5 = (1.5, 2.5), R(T) = (0, 0) + 1 = (1, 1): 0.25 + 2.25 = 2.5; lam 2: 5.0
    loss = fgd_global_loss(torch.tensor([[[[1.0, 2.0]]]]), torch.zeros(1, 1, 1, 2),
                           torch.full((1, 1, 1, 1), 0.5), torch.ones(1, 1, 1, 1), lam=2.0)
    assert math.isclose(loss.item(), 5.0, rel_tol=1e-6)


def test_fgd_global_loss_zero_with_identical_blocks_and_trains_both_blocks():
    torch.manual_seed(0)
    student_block = GlobalContextBlock(4)
    torch.nn.init.normal_(student_block.channel_add[-1].weight)  # not the zero init: a real context
    teacher_block = copy.deepcopy(student_block)
    feats = torch.randn(2, 4, 3, 3)
    same = fgd_global_loss(feats, feats.clone(), student_block(feats), teacher_block(feats.clone()))
    assert same.item() == 0.0
    loss = fgd_global_loss(feats, feats + 1, student_block(feats), teacher_block(feats + 1))
    loss.backward()
    # the official code trains the teacher-side block too
    assert teacher_block.channel_add[-1].weight.grad.abs().sum().item() > 0


def test_global_context_block_starts_as_zero_context():
    block = GlobalContextBlock(4)
    out = block(torch.randn(2, 4, 3, 5))
    assert out.shape == (2, 4, 1, 1) and out.abs().sum().item() == 0.0


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"tar"}))
def test_baseline_defaults_are_complete(method):
    baseline = METHODS[method]()
    assert baseline.default_decay == "constant" and baseline.default_decay in DECAYS
    assert all(weight >= 0 for weight in baseline.loss_weights("faster_rcnn").values())


def test_baseline_default_weights_follow_the_papers():
    assert FGFI().loss_weights("faster_rcnn") == {"kd/fpn": 0.01}
    chen = Chen2017()
    assert (chen.mu, chen.loss_weights("faster_rcnn")["kd/reg"], chen.margin) == (0.5, 0.5, 0.0)
    fgd = FGD()
    assert (fgd.alpha, fgd.beta, fgd.gamma, fgd.lam) == (5e-5, 2.5e-5, 5e-5, 5e-7)
