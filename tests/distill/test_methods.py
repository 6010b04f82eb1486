"""The baseline methods (FitNet, FGFI, Chen 2017, FGD) inside the Distiller, for both detector kinds."""

import copy
import json

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet
from torch import nn

from tardistill.commands import distill
from tardistill.distill import Distiller
from tardistill.distill.methods.chen2017 import CHEN_BACKGROUND_WEIGHT, CHEN_MU
from tardistill.distill.two_stage import two_stage_forward
from tardistill.engine.setup import load_detector
from tardistill.engine.trainer import training_state_dict
from tardistill.errors import ConfigError
from tardistill.models.checkpoint import load_checkpoint

BUILDERS = {"faster_rcnn": tiny_faster_rcnn, "retinanet": tiny_retinanet}
DET_KEYS = {"faster_rcnn": {"det/loss_classifier", "det/loss_box_reg", "det/loss_objectness",
                            "det/loss_rpn_box_reg"},
            "retinanet": {"det/classification", "det/bbox_regression"}}
KD_KEYS = {"fitnet": {"kd/fpn"}, "fgfi": {"kd/fpn"},
           "chen2017": {"kd/fpn", "kd/cls", "kd/reg", "stat/reg_gate_rate"},
           "fgd": {"kd/fgd_focal", "kd/fgd_attention", "kd/fgd_global"}}
CASES = [("faster_rcnn", m) for m in KD_KEYS] + [("retinanet", m) for m in ("fitnet", "fgfi", "fgd")]


def _identical_pair(kind: str, method: str) -> Distiller:
    student = BUILDERS[kind]()
    distiller = Distiller(copy.deepcopy(student), student, method=method)
    distiller.adapters.identity_init()
    if distiller.method_modules is not None:
        blocks = distiller.method_modules
        blocks["teacher"].load_state_dict(blocks["student"].state_dict())
    return distiller


def _total(distiller: Distiller, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = distiller.loss_weights(0, 10)
    return sum(weights[k] * v for k, v in losses.items() if not k.startswith("stat/"))


@pytest.mark.parametrize("kind, method", CASES)
def test_kd_terms_are_zero_when_student_equals_teacher(kind, method):
    distiller = _identical_pair(kind, method)
    losses = distiller(*tiny_batch())
    assert set(losses) == DET_KEYS[kind] | KD_KEYS[method]
    for key in KD_KEYS[method] - {"kd/cls"}:  # Chen's kd/cls holds the hard CE: see the next test
        assert losses[key].item() == 0.0, key
    # Chen's bound: an identical student is never worse than the teacher
    assert all(losses[k].item() == 0.0 for k in losses if k.startswith("stat/"))
    _total(distiller, losses).backward()


def test_chen_cls_term_at_equality_is_hard_ce_plus_weighted_teacher_entropy():
    distiller = _identical_pair("faster_rcnn", "chen2017")
    logits = []
    distiller.student.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: logits.append(o[0]))
    losses = distiller(*tiny_batch())
    # the soft CE at p_S = p_T is the class-weighted entropy of the teacher (the baseline's own case)
    p = logits[0].detach().softmax(dim=1)
    class_weight = torch.ones(p.shape[1])
    class_weight[0] = CHEN_BACKGROUND_WEIGHT
    soft = -(class_weight * p * p.log()).sum(dim=1).mean()
    expected = CHEN_MU * losses["det/loss_classifier"] + (1 - CHEN_MU) * soft
    assert torch.isclose(losses["kd/cls"], expected, rtol=1e-5)


@pytest.mark.parametrize("kind, method", CASES)
def test_step_trains_student_adapters_and_blocks_but_never_the_teacher(kind, method):
    # Trainable batch norm in both models: a teacher in train mode would change its running stats.
    teacher = BUILDERS[kind](norm_layer=nn.BatchNorm2d, seed=1)
    student = BUILDERS[kind](norm_layer=nn.BatchNorm2d, fpn_channels=8, seed=2)
    distiller = Distiller(teacher, student, method=method).train()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    adapters_before = [p.clone() for p in distiller.adapters.parameters()]
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01)
    losses = distiller(*tiny_batch())
    assert all(losses[key].item() > 0 for key in KD_KEYS[method] if key.startswith("kd/"))
    _total(distiller, losses).backward()
    optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    # FGFI's mask may leave a level empty (small anchors never reach half a GT's best IoU)
    assert any(not torch.equal(p, q) for p, q in zip(distiller.adapters.parameters(), adapters_before))
    if method == "fgd":  # both sides' blocks train; their last conv starts at 0
        for side in ("student", "teacher"):
            assert distiller.method_modules[side]["0"].channel_add[-1].weight.abs().sum() > 0, side


@pytest.mark.parametrize("kind", BUILDERS)
def test_saved_student_has_no_adapter_or_context_block_keys(kind):
    distiller = Distiller(BUILDERS[kind](seed=1), BUILDERS[kind](fpn_channels=8), method="fgd")
    state = distiller.student.state_dict()
    assert not any("adapter" in key or "method_modules" in key or "context" in key for key in state)
    BUILDERS[kind](fpn_channels=8, seed=3).load_state_dict(state, strict=True)
    # ...but a resumed run gets them back: the trainer saves everything but the teacher
    saved = training_state_dict(distiller)
    for prefix in ("adapters.", "method_modules.student.", "method_modules.teacher."):
        assert any(key.startswith(prefix) for key in saved), prefix
    trained = {id(p) for p in distiller.trainable_parameters()}
    assert all(id(p) in trained for p in distiller.method_modules.parameters())


def test_loss_weights_are_the_papers_constants_by_default_and_decay_when_asked():
    teacher, student = tiny_faster_rcnn(seed=1), tiny_faster_rcnn()
    fgfi = Distiller(teacher, student, method="fgfi")
    assert fgfi.loss_weights(0, 10) == fgfi.loss_weights(9, 10)
    assert fgfi.loss_weights(9, 10) == {**dict.fromkeys(DET_KEYS["faster_rcnn"], 1.0), "kd/fpn": 0.01,
                                        "stat/decay_w": 1.0}
    chen = Distiller(teacher, student, method="chen2017").loss_weights(5, 10)
    assert chen == {"det/loss_classifier": 0.0, "det/loss_box_reg": 1.0, "det/loss_objectness": 1.0,
                    "det/loss_rpn_box_reg": 1.0, "kd/cls": 1.0, "kd/reg": 0.5, "kd/fpn": 0.5,
                    "stat/decay_w": 1.0}
    fgd = Distiller(teacher, student, method="fgd").loss_weights(5, 10)
    assert {k: fgd[k] for k in KD_KEYS["fgd"]} == dict.fromkeys(KD_KEYS["fgd"], 1.0)
    # with a decay, kd terms scale by w and Chen's classifier loss moves back towards 1
    decayed = Distiller(teacher, student, method="chen2017", decay="linear").loss_weights(5, 10)
    assert decayed["kd/fpn"] == 0.25 and decayed["kd/cls"] == 0.5
    assert decayed["det/loss_classifier"] == 0.5 and decayed["stat/decay_w"] == 0.5
    assert Distiller(teacher, student, method="fgfi", decay="linear").loss_weights(10, 10)["kd/fpn"] == 0.0
    # auto is constant for TAR too (docs/METHOD.md, "Defaults"); the paper's linear decay on request
    assert Distiller(teacher, student).loss_weights(5, 10)["stat/decay_w"] == 1.0
    assert Distiller(teacher, student, decay="linear").loss_weights(5, 10)["stat/decay_w"] == 0.5


def test_method_none_runs_no_teacher_part():
    distiller = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), method="none")
    assert distiller.adapters is None and distiller.loss_weights(3, 10) == {
        **dict.fromkeys(DET_KEYS["faster_rcnn"], 1.0), "stat/decay_w": 1.0}
    assert set(distiller(*tiny_batch())) == DET_KEYS["faster_rcnn"]


def test_chen2017_on_retinanet_and_unknown_methods_are_refused():
    with pytest.raises(ConfigError, match="chen2017 distills faster_rcnn only; for retinanet use one of: "
                                          "tar, none, fitnet, fgfi, fgd"):
        Distiller(tiny_retinanet(seed=1), tiny_retinanet(), method="chen2017")
    with pytest.raises(ConfigError, match="unknown method 'kd' .valid: tar, none, fitnet, fgfi, chen2017"):
        Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), method="kd")
    with pytest.raises(ConfigError, match="valid: auto, linear"):
        Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), method="fgd", decay="poly")


def test_forward_exposes_level_anchors_and_regression_targets():
    teacher, student = tiny_faster_rcnn(seed=1), tiny_faster_rcnn()
    images, targets = tiny_batch()
    out = two_stage_forward(teacher, student, images, targets, level_anchors=True)
    assert [a.shape[0] for a in out.anchors_per_level] == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3, 2 * 2 * 3, 3]
    image_list, _ = student.transform(images)
    features = list(student.backbone(image_list.tensors).values())
    rpn_anchors = student.rpn.anchor_generator(image_list, features)[0]
    assert torch.equal(torch.cat(out.anchors_per_level), rpn_anchors)
    # the positives' targets decode back to their matched GT boxes
    positive = out.labels > 0
    decoded = student.roi_heads.box_coder.decode(out.regression_targets[positive],
                                                 [out.proposals[positive]])
    assert torch.allclose(decoded.reshape(-1, 4), out.matched_gt_boxes[positive], atol=1e-3)


RUN = ["train.iterations=2", "train.eval_every=0", "train.checkpoint_every=0"]


@pytest.mark.parametrize("method, keys", [("fgd", KD_KEYS["fgd"]), ("fgfi", {"kd/fpn"})])
def test_distill_command_runs_baselines(tmp_path, tiny_overrides, untrained_teacher, method, keys):
    result = distill(None, [*tiny_overrides, *RUN, f"distill.teacher={untrained_teacher}",
                            f"distill.method={method}"], tmp_path)
    tensors, meta = load_checkpoint(result["checkpoint"])
    assert meta["role"] == "student"
    assert not any("adapter" in k or "method_modules" in k or k.startswith("teacher") for k in tensors)
    student, _ = load_detector(result["checkpoint"])  # loads strictly into a plain torchvision model
    assert type(student).__name__ == "FasterRCNN"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert keys <= set(train_records[0])
    assert [r["stat/decay_w"] for r in train_records] == [1.0, 1.0]  # the paper's constant weight


def test_distill_command_refuses_chen2017_for_retinanet_before_loading(tmp_path, tiny_overrides):
    with pytest.raises(ConfigError, match="chen2017 distills faster_rcnn only"):
        distill(None, [*tiny_overrides, "model.kind=retinanet", "distill.method=chen2017",
                       "distill.teacher=missing.safetensors"], tmp_path)
    with pytest.raises(ConfigError, match="valid: tar, none, fitnet, fgfi, chen2017, fgd"):
        distill(None, [*tiny_overrides, "distill.method=kd"], tmp_path)
