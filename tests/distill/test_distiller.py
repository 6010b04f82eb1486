import copy

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet

from tardistill.distill import Distiller
from tardistill.distill.losses import FPN_NORMS
from tardistill.errors import ConfigError

DET_KEYS = {"det/loss_classifier", "det/loss_box_reg", "det/loss_objectness", "det/loss_rpn_box_reg"}
ALL_KEYS = DET_KEYS | {"kd/fpn", "kd/cls", "kd/reg", "stat/cls_gate_rate", "stat/reg_gate_rate"}


def _identical_pair(**kwargs) -> Distiller:
    student = tiny_faster_rcnn()
    distiller = Distiller(copy.deepcopy(student), student, **kwargs)
    distiller.adapters.identity_init()
    return distiller


def _total(distiller: Distiller, losses: dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
    weights = distiller.loss_weights(step, 10)
    return sum(weights[k] * v for k, v in losses.items() if not k.startswith("stat/"))


def test_kd_terms_are_zero_when_student_equals_teacher():
    losses = _identical_pair()(*tiny_batch())
    assert set(losses) == ALL_KEYS
    for key in ("kd/fpn", "kd/cls", "kd/reg"):
        assert losses[key].item() == 0.0, key
    # the gates never prefer an identical teacher: p_T(y) > p_S(y) and IoU_T > IoU_S are false
    assert losses["stat/cls_gate_rate"].item() == 0.0
    assert losses["stat/reg_gate_rate"].item() == 0.0
    assert all(losses[k].item() > 0 for k in DET_KEYS)


def test_kd_terms_are_zero_for_identical_models_even_when_every_roi_is_selected():
    losses = _identical_pair(cls_gate="all", reg_gate="always", truncate=False)(*tiny_batch())
    for key in ("kd/fpn", "kd/cls", "kd/reg"):
        assert losses[key].item() == 0.0, key
    assert losses["stat/cls_gate_rate"].item() == 1.0
    assert losses["stat/reg_gate_rate"].item() == 1.0


@pytest.mark.parametrize("fpn_norm", FPN_NORMS)
def test_every_fpn_unit_is_zero_for_identical_models_and_trains_a_different_student(fpn_norm):
    assert _identical_pair(fpn_norm=fpn_norm, truncate=False)(*tiny_batch())["kd/fpn"].item() < 1e-6
    student = tiny_faster_rcnn(fpn_channels=8, head_width=16, seed=2)
    distiller = Distiller(tiny_faster_rcnn(seed=1), student, fpn_norm=fpn_norm).train()
    loss = distiller(*tiny_batch())["kd/fpn"]
    assert loss.item() > 0
    loss.backward()
    grads = [p.grad for p in student.backbone.fpn.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_fpn_tau_is_refused_where_it_would_change_nothing():
    with pytest.raises(ConfigError, match="distill.fpn_tau: 0.5 has no effect with fpn_norm standard"):
        Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_norm="standard", fpn_tau=0.5)
    # The default temperature is no choice the user made: a squared-distance unit alone is accepted.
    assert Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_norm="standard").method.fpn_norm == "standard"
    sharp = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_norm="standard_softmax", fpn_tau=0.5)
    assert sharp.method.fpn_tau == 0.5


def test_step_updates_student_and_adapters_but_never_the_teacher():
    # Trainable batch norm in both models: a teacher in train mode would change its running stats.
    teacher = tiny_faster_rcnn(norm_layer=nn.BatchNorm2d, seed=1)
    student = tiny_faster_rcnn(norm_layer=nn.BatchNorm2d, fpn_channels=8, head_width=16, seed=2)
    # channel_mean units: the standardised term gives no gradient to the adapters' biases, nor to
    # a one-cell level, and this test wants every adapter parameter to train.
    distiller = Distiller(teacher, student, cls_gate="all", reg_gate="always",
                          fpn_norm="channel_mean").train()
    assert not teacher.training and student.training and distiller.adapters.training
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.named_parameters()}
    adapters_before = [p.clone() for p in distiller.adapters.parameters()]
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01)
    losses = distiller(*tiny_batch())
    assert losses["kd/cls"].item() > 0 and losses["kd/fpn"].item() > 0
    _total(distiller, losses).backward()
    optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not torch.equal(student.backbone.fpn.layer_blocks[0][0].weight,
                           student_before["backbone.fpn.layer_blocks.0.0.weight"])
    assert not torch.equal(student.roi_heads.box_predictor.cls_score.weight,
                           student_before["roi_heads.box_predictor.cls_score.weight"])
    assert all(not torch.equal(p, q) for p, q in zip(distiller.adapters.parameters(), adapters_before))
    distiller.eval().train()
    assert not teacher.training and student.training


def test_student_state_dict_is_a_plain_torchvision_model():
    student = tiny_faster_rcnn(fpn_channels=8, head_width=16)
    distiller = Distiller(tiny_faster_rcnn(seed=1), student)
    state = distiller.student.state_dict()
    assert not any("adapter" in key for key in state)
    tiny_faster_rcnn(fpn_channels=8, head_width=16, seed=3).load_state_dict(state, strict=True)
    assert any(key.startswith("adapters.") for key in distiller.state_dict())


def test_heterogeneous_pair_trains():
    teacher = tiny_faster_rcnn(seed=1)
    student = tiny_faster_rcnn(widths=(4, 8, 16, 32), depth=2, fpn_channels=8, head_width=16)
    distiller = Distiller(teacher, student, cls_gate="positive", reg_gate="always", sharing="union")
    assert distiller.adapters.convs["0"].weight.shape == (16, 8, 1, 1)
    losses = distiller(*tiny_batch())
    assert set(losses) == ALL_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    _total(distiller, losses).backward()
    assert distiller.adapters.convs["0"].weight.grad.abs().sum() > 0
    assert student.roi_heads.box_head.fc6.weight.grad.abs().sum() > 0


def test_different_fpn_levels_are_matched_by_stride():
    teacher = tiny_faster_rcnn(seed=1)
    student = tiny_faster_rcnn(returned_layers=[2, 3, 4])  # strides 8..64 under the names 0..pool
    distiller = Distiller(teacher, student)
    assert {name: m.teacher for name, m in distiller.level_matches.items()} == {
        "0": "1", "1": "2", "2": "3", "pool": "pool"}
    assert "kd/fpn" in distiller(*tiny_batch())
    distiller = Distiller(teacher, student, fpn_weight=0.0)
    losses = distiller(*tiny_batch())
    assert "kd/fpn" not in losses and {"kd/cls", "kd/reg"} <= set(losses)
    _total(distiller, losses).backward()


def test_mismatched_classes_rejected_before_training():
    with pytest.raises(ConfigError, match="teacher predicts 5 classes but student predicts 3"):
        Distiller(tiny_faster_rcnn(num_classes=5), tiny_faster_rcnn())


def test_switched_off_terms_are_not_computed():
    teacher, student = tiny_faster_rcnn(seed=1), tiny_faster_rcnn()
    distiller = Distiller(teacher, student, fpn_weight=0.0, reg_weight=0.0)
    assert distiller.adapters is None
    assert len(distiller.trainable_parameters()) == len(list(student.parameters()))
    assert set(distiller(*tiny_batch())) == DET_KEYS | {"kd/cls", "stat/cls_gate_rate"}


def test_loss_weights_follow_the_decay():
    distiller = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_weight=2.0,
                          cls_weight=0.5, reg_weight=0.0, decay="linear")
    weights = distiller.loss_weights(5, 10)  # linear: w = 0.5
    assert weights == {**dict.fromkeys(DET_KEYS, 1.0), "kd/fpn": 1.0, "kd/cls": 0.25, "kd/reg": 0.0,
                       "stat/decay_w": 0.5}
    exp = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_weight=0.0, cls_weight=1.0, decay="exp",
                    decay_kwargs={"gamma": 0.25})
    assert exp.loss_weights(10, 10)["kd/cls"] == pytest.approx(0.25)


@pytest.mark.parametrize("option, match", [
    ({"cls_gate": "hard"}, "adaptive, positive, all"),
    ({"reg_gate": "never"}, "teacher_better, teacher_improves, always"),
    ({"decay": "poly"}, "linear, constant, cosine, step, exp"),
    ({"sharing": "teacher"}, "student, union"),
    ({"decay_kwargs": {"gama": 0.1}}, "step_fraction, gamma"),
    ({"cls_weight": -1.0}, "cls_weight must be >= 0"),
    ({"tau": 0.0}, "tau must be > 0"),
])
def test_unknown_options_list_valid_values(option, match):
    with pytest.raises(ConfigError, match=match):
        Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_weight=0.0, **option)


def test_mixed_and_unsupported_kinds_are_refused():
    retina = RetinaNet(tiny_faster_rcnn().backbone, num_classes=3, min_size=64, max_size=64)
    with pytest.raises(ConfigError, match="teacher is faster_rcnn but student is retinanet"):
        Distiller(tiny_faster_rcnn(), retina)
    fcos = FCOS(tiny_faster_rcnn(fpn_channels=32).backbone, num_classes=3, min_size=64, max_size=64)
    with pytest.raises(ConfigError, match="FCOS is not supported .supported: faster_rcnn, retinanet"):
        Distiller(fcos, copy.deepcopy(fcos))


def test_forward_needs_train_mode():
    distiller = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), fpn_weight=0.0).eval()
    with pytest.raises(RuntimeError, match="training losses"):
        distiller(*tiny_batch())
