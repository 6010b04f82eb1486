import math

import pytest
import torch

from tardistill.distill.methods.cwd import cwd_loss
from tardistill.distill.losses import (
    cls_distill_loss, cls_gate, fpn_imitation_loss, paired_iou, pyramid_spread, reg_distill_loss, reg_gate)
from tardistill.errors import ConfigError


def test_fpn_imitation_loss_hand_computed():
    # image 0: cells differ by 1 and 3, mask (1, 0.5): (1 * 1 + 0.5 * 9) / (2 * 1.5) = 5.5 / 3
    # image 1: differences 1 and 3, mask (0.25, 0): sum M < 1 so the denominator is 2: 0.25 / 2
    student = torch.tensor([[[[1.0, 3.0]]], [[[1.0, 3.0]]]])  # [N=2, C=1, H=1, W=2]
    teacher = torch.zeros(2, 1, 1, 2)
    mask = torch.tensor([[[1.0, 0.5]], [[0.25, 0.0]]])
    expected = (5.5 / 3 + 0.125) / 2  # per-image normalisation, then the mean over images
    for norm in ("sum", "channel_mean"):  # one channel: summing and averaging agree
        assert math.isclose(fpn_imitation_loss(student, teacher, mask, norm=norm).item(), expected,
                            rel_tol=1e-6)


def test_fpn_imitation_channel_units():
    student = torch.tensor([[[[1.0]], [[2.0]]]])  # C = 2: ||(1, 2)||^2 = 5
    teacher, mask = torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1)
    assert fpn_imitation_loss(student, teacher, mask, norm="sum").item() == 2.5
    assert fpn_imitation_loss(student, teacher, mask, norm="channel_mean").item() == 1.25
    feats = torch.randn(2, 4, 3, 3)
    for norm in ("sum", "channel_mean", "standard"):
        assert fpn_imitation_loss(feats, feats.clone(), torch.rand(2, 3, 3), norm=norm).item() < 1e-6


def test_fpn_imitation_standard_is_free_of_scale_and_channels():
    # One channel, two cells: the student (1, 3) standardises to (-1, 1), the teacher (0, 4) too, so
    # they agree; the teacher (4, 0) standardises to (1, -1): squared distances 4 and 4, full mask
    # (2 cells): 8 / (2 * 2) = 2.
    student = torch.tensor([[[[1.0, 3.0]]]])
    mask = torch.ones(1, 1, 2)
    assert fpn_imitation_loss(student, torch.tensor([[[[0.0, 4.0]]]]), mask).item() < 1e-6
    assert math.isclose(fpn_imitation_loss(student, torch.tensor([[[[4.0, 0.0]]]]), mask).item(), 2.0,
                        rel_tol=1e-4)
    # Unrelated features: about 1 whatever their scale or channel count.
    torch.manual_seed(0)
    for channels, scale in ((16, 1.0), (256, 1000.0)):
        s, t = torch.randn(2, channels, 8, 8), scale * torch.randn(2, channels, 8, 8)
        assert 0.8 < fpn_imitation_loss(s, t, torch.ones(2, 8, 8)).item() < 1.2


def test_fpn_channel_softmax_is_cwd_under_the_mask():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    # A mask of ones: CWD's term at tau 1.
    ones = fpn_imitation_loss(student, teacher, torch.ones(2, 3, 3), norm="channel_softmax")
    assert math.isclose(ones.item(), cwd_loss(student, teacher, tau=1.0).item(), rel_tol=1e-5)
    # A KL: 0 for equal maps, positive under any mask.
    mask = torch.rand(2, 3, 3)
    assert fpn_imitation_loss(student, student.clone(), mask, norm="channel_softmax").item() < 1e-6
    assert fpn_imitation_loss(student, teacher, mask, norm="channel_softmax").item() > 0
    # Cells outside a truncated mask drop out; an image without boxes adds 0 to the mean.
    box = torch.zeros(2, 3, 3)
    box[0, :2, :2] = 1.0
    changed = student.clone()
    changed[0, :, 2, :] += 5.0
    changed[1] += 5.0
    loss = fpn_imitation_loss(student, teacher, box, norm="channel_softmax")
    assert math.isclose(fpn_imitation_loss(changed, teacher, box, norm="channel_softmax").item(), loss.item(),
                        rel_tol=1e-5)
    inside = cwd_loss(student[:1, :, :2, :2], teacher[:1, :, :2, :2], tau=1.0)
    assert math.isclose(loss.item(), inside.item() / 2, rel_tol=1e-5)
    # Finite gradients, 0 on the cells and images the mask leaves out.
    student.requires_grad_(True)
    fpn_imitation_loss(student, teacher, box, norm="channel_softmax").backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[0, :, 2, :].abs().max() == 0 and student.grad[1].abs().max() == 0


def test_fpn_standard_softmax_is_free_of_scale():
    torch.manual_seed(0)
    student, teacher, mask = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8), torch.ones(2, 8, 8)
    unit = fpn_imitation_loss(student, teacher, mask, norm="standard_softmax").item()
    scaled = fpn_imitation_loss(student * 100, teacher * 1000 + 3, mask, norm="standard_softmax").item()
    assert math.isclose(unit, scaled, rel_tol=1e-4)
    assert 0.7 < unit < 1.3  # unrelated maps: about 1
    # The raw distance is not: sharper maps give a far larger KL.
    assert fpn_imitation_loss(student * 10, teacher * 10, mask, norm="channel_softmax").item() > 10 * unit
    assert fpn_imitation_loss(student, student * 3 + 1, mask, norm="standard_softmax").item() < 1e-5


def test_fpn_level_softmax_is_free_of_scale_but_keeps_each_channels_sharpness():
    torch.manual_seed(0)
    student, teacher, mask = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8), torch.rand(2, 8, 8)
    unit = fpn_imitation_loss(student, teacher, mask, norm="level_softmax").item()
    # Both maps scaled alike (and shifted, which no softmax sees): the same value.
    scaled = fpn_imitation_loss(student * 100 - 2, teacher * 100 + 3, mask, norm="level_softmax").item()
    assert math.isclose(unit, scaled, rel_tol=1e-4)
    # Unlike standard_softmax, the student's scale still counts against the teacher's...
    assert fpn_imitation_loss(student, student * 3, mask, norm="level_softmax").item() > 0.1
    assert fpn_imitation_loss(student, student * 3, mask, norm="standard_softmax").item() < 1e-5
    # ...and one channel three times the spread of the others keeps that ratio: with the teacher's
    # spread as the unit, this is channel_softmax on the maps divided by one number per image.
    teacher[:, 0] *= 3
    spread = teacher.var(dim=(2, 3), unbiased=False).mean(dim=1).add(1e-5).sqrt()[:, None, None, None]
    by_hand = fpn_imitation_loss(student / spread, teacher / spread, mask, norm="channel_softmax").item()
    assert math.isclose(fpn_imitation_loss(student, teacher, mask, norm="level_softmax").item(), by_hand,
                        rel_tol=1e-5)
    assert fpn_imitation_loss(teacher, teacher.clone(), mask, norm="level_softmax").item() < 1e-6


def test_pyramid_spread_is_the_teachers_spread_over_all_levels():
    torch.manual_seed(0)
    levels = [torch.randn(2, 4, 8, 8) * 3, torch.randn(2, 4, 4, 4)]
    # Channel variances over cells: about 9 on the first level, 1 on the second; their mean is 5.
    spread = pyramid_spread(levels)
    assert spread.shape == (2,) and torch.allclose(spread, torch.full((2,), 5.0).sqrt(), rtol=0.15)
    assert torch.allclose(pyramid_spread([level * 10 for level in levels]), 10 * spread, rtol=1e-4)


def test_fpn_pyramid_softmax_divides_every_level_by_one_teacher_scale():
    torch.manual_seed(0)
    student, teacher, mask = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8) * 2, torch.rand(2, 8, 8)
    coarse = torch.randn(2, 16, 4, 4) * 0.5
    scale = pyramid_spread([teacher, coarse])
    value = fpn_imitation_loss(student, teacher, mask, norm="pyramid_softmax", scale=scale).item()
    by_hand = fpn_imitation_loss(student / scale[:, None, None, None], teacher / scale[:, None, None, None], mask,
                                 norm="channel_softmax").item()
    assert math.isclose(value, by_hand, rel_tol=1e-5)
    # Free of the feature scale: the whole pyramid 100 times larger gives the same value...
    scaled = fpn_imitation_loss(student * 100, teacher * 100, mask, norm="pyramid_softmax",
                                scale=pyramid_spread([teacher * 100, coarse * 100])).item()
    assert math.isclose(value, scaled, rel_tol=1e-4)
    # ...while this level, twice as spread as the coarse one, stays sharper than under level_softmax,
    # which scales each level by its own spread.
    assert fpn_imitation_loss(student, teacher, mask, norm="level_softmax").item() < value
    with pytest.raises(ValueError, match="pyramid_softmax needs the teacher's spread"):
        fpn_imitation_loss(student, teacher, mask, norm="pyramid_softmax")


def test_fpn_softmax_temperature():
    torch.manual_seed(0)
    student, teacher, mask = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.rand(2, 3, 3)
    # tau divides the features and multiplies the KL by tau^2, as CWD's temperature does.
    at_half = fpn_imitation_loss(student, teacher, mask, norm="channel_softmax", tau=0.5).item()
    sharpened = fpn_imitation_loss(student * 2, teacher * 2, mask, norm="channel_softmax").item()
    assert math.isclose(at_half, sharpened * 0.25, rel_tol=1e-5)
    # The squared distances ignore it.
    assert fpn_imitation_loss(student, teacher, mask, tau=0.5).item() == fpn_imitation_loss(
        student, teacher, mask).item()


def test_fpn_imitation_unknown_norm_names_the_key():
    with pytest.raises(ConfigError, match="distill.fpn_norm"):
        fpn_imitation_loss(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1), norm="l2")


def test_cls_distill_loss_hand_computed():
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # p_T = (0.75, 0.25), p_S = (0.5, 0.5): KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812
    assert math.isclose(cls_distill_loss(student, teacher, tau=1.0).item(), 0.130812, rel_tol=1e-5)
    # tau 2: p_T = (0.633975, 0.366025): KL = 0.036341, times tau^2 = 0.145363
    assert math.isclose(cls_distill_loss(student, teacher, tau=2.0).item(), 0.145363, rel_tol=1e-5)
    # the mean over rows: a second, identical row changes nothing
    two = cls_distill_loss(student.expand(2, 2), teacher.expand(2, 2), tau=1.0)
    assert math.isclose(two.item(), 0.130812, rel_tol=1e-5)
    # normalised like the cross-entropy: 2 selected rows out of 8 sampled RoIs weigh 2 / 8
    sampled = cls_distill_loss(student.expand(2, 2), teacher.expand(2, 2), tau=1.0, num_sampled=8)
    assert math.isclose(sampled.item(), 0.130812 * 2 / 8, rel_tol=1e-5)


def test_cls_distill_loss_empty_is_zero_and_keeps_graph():
    student = torch.zeros(0, 3, requires_grad=True)
    loss = cls_distill_loss(student, torch.zeros(0, 3), tau=1.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_cls_gate_modes():
    labels = torch.tensor([1, 2, 0, 1])
    teacher = torch.tensor([[0.0, 2.0, 0.0],   # teacher surer of class 1 -> adaptive picks it
                            [0.0, 0.0, 0.0],   # student surer of class 2 -> not picked
                            [5.0, 0.0, 0.0],   # background RoI: never in adaptive/positive
                            [0.0, 1.0, 0.0]])  # equal to the student: p_T(y) > p_S(y) is false
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gate = lambda mode: cls_gate(student, teacher, labels, mode=mode).tolist()  # noqa: E731
    assert gate("adaptive") == [True, False, False, False]
    assert gate("positive") == [True, True, False, True]
    assert gate("all") == [True, True, True, True]
    with pytest.raises(ConfigError, match="adaptive, positive, all"):
        gate("hard")


def test_cls_gate_adaptive_ignores_tau():
    # At tau = 1 the student (logit 2 vs 1 over background) beats the teacher; only tau=1 is used.
    labels = torch.tensor([1])
    student, teacher = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 1.0]])
    assert cls_gate(student, teacher, labels, mode="adaptive").tolist() == [False]


def test_paired_iou():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])
    assert paired_iou(a, b).tolist() == [0.5, 0.0]


def test_reg_gate_modes():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(4, 4)
    half, fifth, full = [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 2.0], [0.0, 0.0, 10.0, 10.0]
    # IoU with gt per row:     teacher     student     proposal
    teacher = torch.tensor([full,                  # 1.0         0.5         0.5
                            half,                  # 0.5         1.0         0.2
                            [0.0, 0.0, 5.0, 5.0],  # 0.25        0.2         0.8
                            half])                 # 0.5         0.5         0.5
    student = torch.tensor([half, full, fifth, half])
    proposals = torch.tensor([[0.0, 0.0, 5.0, 10.0], fifth, [0.0, 0.0, 10.0, 8.0], half])
    gate = lambda mode: reg_gate(student, teacher, proposals, gt, mode=mode).tolist()  # noqa: E731
    assert gate("teacher_better") == [True, False, True, False]
    assert gate("teacher_improves") == [True, True, False, False]
    assert gate("always") == [True, True, True, True]
    with pytest.raises(ConfigError, match="teacher_better, teacher_improves, always"):
        gate("never")


def test_reg_distill_loss_hand_computed():
    student = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.05, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # smooth-L1, beta 1/9: |0.05| < beta -> 0.5 * 0.05^2 / beta = 0.01125; |1| -> 1 - 0.5 / 9
    both = reg_distill_loss(student, teacher, torch.tensor([True, True]), num_sampled=4)
    assert math.isclose(both.item(), (0.01125 + 1 - 0.5 / 9) / 4, rel_tol=1e-6)
    second = reg_distill_loss(student, teacher, torch.tensor([False, True]), num_sampled=4)
    assert math.isclose(second.item(), (1 - 0.5 / 9) / 4, rel_tol=1e-6)
    none = reg_distill_loss(student, teacher, torch.tensor([False, False]), num_sampled=4)
    assert none.item() == 0.0
    both.backward()
    assert student.grad is not None and teacher.grad is None
