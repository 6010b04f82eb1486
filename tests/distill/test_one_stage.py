"""RetinaNet distillation: shared anchors, sigmoid/L1 per-anchor KD terms, pair checks (METHOD.md 6)."""

import copy
import math

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_retinanet
from torch import nn
from torchvision.models.detection._utils import BoxCoder

from tardistill.distill import Distiller
from tardistill.distill.losses import cls_gate, sigmoid_distill_loss
from tardistill.distill.one_stage import (
    OneStageOutputs, anchor_cls_loss, anchor_reg_loss, check_one_stage_pair, one_stage_forward)
from tardistill.errors import ConfigError

DET_KEYS = {"det/classification", "det/bbox_regression"}
ALL_KEYS = DET_KEYS | {"kd/fpn", "kd/cls", "kd/reg", "stat/cls_gate_rate", "stat/reg_gate_rate"}
# Binary KL of p_T = 0.75 (logit ln 3) from p_S = 0.5 (logit 0): 0.75 ln 1.5 + 0.25 ln 0.5.
KL_LN3 = 0.130812
# The same at tau = 2: p_T = sigmoid(ln 3 / 2) = 0.633975.
KL_LN3_TAU2 = 0.036341


def _identical_pair(**kwargs) -> Distiller:
    student = tiny_retinanet()
    distiller = Distiller(copy.deepcopy(student), student, **kwargs)
    distiller.adapters.identity_init()
    return distiller


def _total(distiller: Distiller, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = distiller.loss_weights(0, 10)
    return sum(weights[k] * v for k, v in losses.items() if not k.startswith("stat/"))


def _outputs(labels, student_logits, teacher_logits, *, num_positives=None, anchors=None, gt=None,
             student_deltas=None, teacher_deltas=None) -> OneStageOutputs:
    """Hand-made forward outputs: only the fields a KD term reads matter."""
    num_positives = num_positives if num_positives is not None else int((labels > 0).sum())
    anchors = anchors if anchors is not None else torch.zeros(num_positives, 4)
    return OneStageOutputs(
        det_losses={}, gt_boxes=[], student_features={}, labels=labels, student_logits=student_logits,
        anchors=anchors, matched_gt_boxes=gt if gt is not None else anchors.clone(),
        student_deltas=student_deltas if student_deltas is not None else torch.zeros(num_positives, 4),
        teacher_logits=teacher_logits,
        teacher_deltas=teacher_deltas if teacher_deltas is not None else torch.zeros(num_positives, 4))


def test_student_losses_match_torchvision_forward():
    student = tiny_retinanet().train()
    teacher = tiny_retinanet(fpn_channels=8, seed=1).eval().requires_grad_(False)
    images, targets = tiny_batch()
    reference = student(images, targets)
    out = one_stage_forward(teacher, student, images, targets)
    assert out.det_losses.keys() == reference.keys() == {"classification", "bbox_regression"}
    for name, value in reference.items():
        assert torch.equal(out.det_losses[name], value), name


def test_teacher_scores_the_same_anchors_on_every_level():
    student = tiny_retinanet().train()
    teacher = tiny_retinanet(fpn_channels=8, seed=1).eval().requires_grad_(False)
    out = one_stage_forward(teacher, student, *tiny_batch())
    assert list(out.teacher_features) == ["0", "1", "2", "p6", "p7"]  # P3-P7: strides 8..128
    assert out.teacher_features["p7"].shape[1] == 8 and out.student_features["p7"].shape[1] == 16
    rows, positives = out.labels.shape[0], out.num_positives
    assert out.student_logits.shape == out.teacher_logits.shape == (rows, 3)
    assert out.student_deltas.shape == out.teacher_deltas.shape == out.matched_gt_boxes.shape == (positives, 4)
    # The matcher keeps low-quality matches, so each of the 3 GT boxes has a positive anchor.
    assert int((out.labels > 0).sum()) == positives >= 3
    assert set(out.labels[out.labels > 0].tolist()) == {1, 2}
    # 2 images x 86 cells x 3 anchors, less the anchors the matcher ignores
    assert positives < rows < 2 * 86 * 3
    assert not out.teacher_logits.requires_grad and out.student_logits.requires_grad


def test_teacher_runs_only_for_active_terms():
    student, teacher = tiny_retinanet().train(), tiny_retinanet(seed=1).eval()
    calls = []
    teacher.backbone.register_forward_hook(lambda *_: calls.append("backbone"))
    teacher.head.register_forward_hook(lambda *_: calls.append("head"))
    out = one_stage_forward(teacher, student, *tiny_batch(), teacher_head=False)
    assert calls == ["backbone"] and out.teacher_logits is None and out.teacher_features is not None
    out = one_stage_forward(teacher, student, *tiny_batch(), teacher_features=False)
    assert calls == ["backbone", "backbone", "head"] and out.teacher_features is None
    one_stage_forward(teacher, student, *tiny_batch(), teacher_features=False, teacher_head=False)
    assert len(calls) == 3


@pytest.mark.parametrize("gates", [{}, {"cls_gate": "all", "reg_gate": "always", "truncate": False}])
def test_kd_terms_are_zero_when_student_equals_teacher(gates):
    losses = _identical_pair(**gates)(*tiny_batch())
    assert set(losses) == ALL_KEYS
    for key in ("kd/fpn", "kd/cls", "kd/reg"):
        assert losses[key].item() == 0.0, key
    # an identical teacher is never preferred by the adaptive gates, always by all/always
    expected_rate = 1.0 if gates else 0.0
    assert losses["stat/cls_gate_rate"].item() == losses["stat/reg_gate_rate"].item() == expected_rate
    assert all(losses[k].item() > 0 for k in DET_KEYS)


def test_sigmoid_gate_selects_the_intended_anchors():
    labels = torch.tensor([1, 2, 0, 1])  # 0: a negative anchor
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[5.0, 0.5, 5.0],   # sigmoid(0.5) > sigmoid(0): picked (a softmax would not)
                            [0.0, 0.0, 1.0],   # student surer of class 2: not picked
                            [5.0, 0.0, 0.0],   # negative anchor: never in adaptive/positive
                            [0.0, 1.0, 0.0]])  # equal to the student: p_T(y) > p_S(y) is false
    gate = lambda mode, **kw: cls_gate(student, teacher, labels, mode=mode, sigmoid=True, **kw).tolist()  # noqa: E731
    assert gate("adaptive") == [True, False, False, False]
    assert cls_gate(student, teacher, labels, mode="adaptive").tolist()[0] is False  # softmax gate
    assert gate("positive") == [True, True, False, True]
    assert gate("all") == [True, True, True, True]


def test_sigmoid_distill_loss_hand_computed():
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # class 1 matches the student: contributes 0
    assert math.isclose(sigmoid_distill_loss(student, teacher, tau=1.0, num_positives=1).item(), KL_LN3,
                        rel_tol=1e-5)
    # summed over rows, divided by the positives (not by the rows): 2 rows / 4 positives
    two = sigmoid_distill_loss(student.expand(2, 2), teacher.expand(2, 2), tau=1.0, num_positives=4)
    assert math.isclose(two.item(), KL_LN3 / 2, rel_tol=1e-5)
    # no tau^2 factor: METHOD.md section 6 states the BCE of the tempered sigmoids alone
    tempered = sigmoid_distill_loss(student, teacher, tau=2.0, num_positives=1)
    assert math.isclose(tempered.item(), KL_LN3_TAU2, rel_tol=1e-4)
    two.backward()
    assert student.grad is not None


def test_sigmoid_distill_loss_is_zero_without_rows_or_positives():
    student = torch.zeros(0, 3, requires_grad=True)
    empty = sigmoid_distill_loss(student, torch.zeros(0, 3), tau=1.0, num_positives=2)
    assert empty.item() == 0.0 and empty.requires_grad
    negatives_only = torch.ones(2, 3, requires_grad=True)
    loss = sigmoid_distill_loss(negatives_only, torch.zeros(2, 3), tau=1.0, num_positives=0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_anchor_cls_loss_gates_then_normalises_by_positives():
    ln3 = math.log(3.0)
    labels = torch.tensor([1, 0, 2])  # two positive anchors, one negative
    student = torch.zeros(3, 3, requires_grad=True)
    teacher = torch.tensor([[0.0, ln3, 0.0],    # p_T(1) = 0.75 > 0.5: picked by adaptive
                            [ln3, 0.0, 0.0],    # negative anchor
                            [0.0, 0.0, -ln3]])  # p_T(2) = 0.25 < 0.5: not picked
    out = _outputs(labels, student, teacher)
    loss, rate = anchor_cls_loss(out, mode="adaptive", tau=1.0)
    assert math.isclose(loss.item(), KL_LN3 / 2, rel_tol=1e-5) and rate.item() == 0.5
    # every row of the classification loss, still divided by the 2 positives
    loss, rate = anchor_cls_loss(out, mode="all", tau=1.0)
    assert math.isclose(loss.item(), 3 * KL_LN3 / 2, rel_tol=1e-5) and rate.item() == 1.0
    loss, _ = anchor_cls_loss(out, mode="positive", tau=1.0)
    assert math.isclose(loss.item(), 2 * KL_LN3 / 2, rel_tol=1e-5)
    # the gate stays at tau = 1; the loss uses tau
    loss, _ = anchor_cls_loss(out, mode="adaptive", tau=2.0)
    assert math.isclose(loss.item(), KL_LN3_TAU2 / 2, rel_tol=1e-4)


def test_anchor_reg_loss_gates_decoded_boxes_and_normalises_by_positives():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(3, 1)  # every anchor sits on its GT box
    student = torch.tensor([[0.0, 0.0, 0.0, 0.0],    # IoU 1: a shifted teacher is worse
                            [0.5, 0.0, 0.0, 0.0],    # shifted by half a width: IoU 1/3
                            [0.0, 0.0, 0.0, 0.2]], requires_grad=True)
    teacher = torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.1]])
    out = _outputs(torch.tensor([1, 1, 2]), None, None, anchors=anchors, student_deltas=student,
                   teacher_deltas=teacher)
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    loss, rate = anchor_reg_loss(out, box_coder=coder, mode="teacher_better")
    # L1 on the picked rows 1 and 2: |0.5| + |0.2 - 0.1|, over 3 positive anchors
    assert math.isclose(loss.item(), 0.6 / 3, rel_tol=1e-6)
    assert math.isclose(rate.item(), 2 / 3, rel_tol=1e-6)
    loss, rate = anchor_reg_loss(out, box_coder=coder, mode="teacher_improves")  # the anchor has IoU 1
    assert loss.item() == 0.0 and rate.item() == 0.0
    loss, rate = anchor_reg_loss(out, box_coder=coder, mode="always")
    assert math.isclose(loss.item(), 0.7 / 3, rel_tol=1e-6) and rate.item() == 1.0
    loss.backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_step_updates_student_and_adapters_but_never_the_teacher():
    # Trainable batch norm in both backbones: a teacher in train mode would change its running stats.
    teacher = tiny_retinanet(norm_layer=nn.BatchNorm2d, seed=1)
    student = tiny_retinanet(norm_layer=nn.BatchNorm2d, widths=(4, 8, 16, 32), depth=2, fpn_channels=8,
                             seed=2)
    with torch.no_grad():  # both heads start at the prior probability; make the teacher differ
        teacher.head.classification_head.cls_logits.bias.normal_(generator=torch.Generator().manual_seed(0))
    # untruncated masks: on 64 px inputs the single P7 cell (centre 64, 64) lies outside every box
    # channel_mean units: the standardised term gives no gradient to the adapters' biases, nor to
    # a one-cell level, and this test wants every adapter parameter to train.
    distiller = Distiller(teacher, student, cls_gate="all", reg_gate="always",
                          fpn_norm="channel_mean", truncate=False).train()
    assert not teacher.training and student.training and distiller.adapters.training
    assert distiller.adapters.levels == ["0", "1", "2", "p6", "p7"]
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.named_parameters()}
    adapters_before = [p.clone() for p in distiller.adapters.parameters()]
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01)
    losses = distiller(*tiny_batch())
    assert losses["kd/fpn"].item() > 0 and losses["kd/cls"].item() > 0.1 and losses["kd/reg"].item() > 0
    _total(distiller, losses).backward()
    optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for name in ("backbone.fpn.layer_blocks.0.0.weight", "head.classification_head.cls_logits.weight",
                 "head.regression_head.bbox_reg.weight"):
        assert not torch.equal(student.get_parameter(name), student_before[name]), name
    assert all(not torch.equal(p, q) for p, q in zip(distiller.adapters.parameters(), adapters_before))
    distiller.eval().train()
    assert not teacher.training and student.training


def test_student_state_dict_loads_into_a_plain_torchvision_retinanet():
    student = tiny_retinanet(fpn_channels=8)
    distiller = Distiller(tiny_retinanet(seed=1), student)
    state = distiller.student.state_dict()
    assert not any("adapter" in key for key in state)
    tiny_retinanet(fpn_channels=8, seed=3).load_state_dict(state, strict=True)
    assert any(key.startswith("adapters.") for key in distiller.state_dict())


def test_images_without_objects_give_zero_head_terms():
    images, targets = tiny_batch()
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in targets]
    distiller = Distiller(tiny_retinanet(seed=1), tiny_retinanet(), cls_gate="all", reg_gate="always")
    losses = distiller(images, targets)
    assert losses["kd/cls"].item() == losses["kd/reg"].item() == losses["kd/fpn"].item() == 0.0
    assert all(torch.isfinite(v) for v in losses.values())
    _total(distiller, losses).backward()


def test_loss_weights_name_the_retinanet_losses():
    distiller = Distiller(tiny_retinanet(seed=1), tiny_retinanet(), fpn_weight=2.0, cls_weight=0.5,
                          reg_weight=0.0, decay="linear")
    assert distiller.loss_weights(5, 10) == {**dict.fromkeys(DET_KEYS, 1.0), "kd/fpn": 1.0, "kd/cls": 0.25,
                                             "kd/reg": 0.0, "stat/decay_w": 0.5}
    assert set(distiller(*tiny_batch())) == DET_KEYS | {"kd/fpn", "kd/cls", "stat/cls_gate_rate"}


@pytest.mark.parametrize("student_kwargs, match", [
    ({"anchor_sizes": (16, 32, 64, 128, 256)}, r"anchor sizes: teacher \(\(8,\), .*student \(\(16,\)"),
    ({"aspect_ratios": (1.0,)}, r"aspect ratios: .*; anchors per location: teacher \(3, 3, 3, 3, 3\), "
                                r"student \(1, 1, 1, 1, 1\)"),
    ({"returned_layers": [1, 2, 3]}, r"FPN level strides: teacher \(8, 16, 32, 64, 128\), "
                                     r"student \(4, 8, 16, 32, 64\)"),
])
def test_mismatched_anchor_grids_are_refused(student_kwargs, match):
    teacher, student = tiny_retinanet(seed=1), tiny_retinanet(**student_kwargs)
    with pytest.raises(ConfigError, match="anchor grids differ"):
        check_one_stage_pair(teacher, student)
    # refused even with FPN imitation off: the head terms need the anchors to line up
    with pytest.raises(ConfigError, match=match):
        Distiller(teacher, student, fpn_weight=0.0)


def test_other_incompatible_pairs_are_refused():
    student = tiny_retinanet()
    with pytest.raises(ConfigError, match="teacher predicts 5 classes but student predicts 3"):
        Distiller(tiny_retinanet(num_classes=5), student)
    with pytest.raises(ConfigError, match=r"min_size: teacher \(96,\), student \(64,\)"):
        Distiller(tiny_retinanet(min_size=96), student)
    teacher = copy.deepcopy(student)
    teacher.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    with pytest.raises(ConfigError, match="box coder weights differ"):
        Distiller(teacher, student)
    with pytest.raises(ConfigError, match="RetinaNet has none"):
        Distiller(tiny_retinanet(seed=1), student, sharing="union")
