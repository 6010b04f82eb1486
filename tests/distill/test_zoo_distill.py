"""A torchvision zoo pair end to end: a COCO-class fasterrcnn_resnet50_fpn_v2 teacher, read from a
reference-script checkpoint, distils into fasterrcnn_mobilenet_v3_large_fpn on the 10 synthetic classes,
with every method, although their FPN strides differ."""

import argparse
import json

import pytest
import torch

from tardistill import commands
from tardistill.bench.distill_cost import measure_step_times
from tardistill.commands import distill
from tardistill.config import load_config, save_config
from tardistill.data.synthetic import SYNTH_CLASSES
from tardistill.distill import Distiller
from tardistill.distill.methods.registry import METHODS
from tardistill.distill.pair import build_pair
from tardistill.distill.teacher import load_teacher
from tardistill.engine.setup import load_detector
from tardistill.errors import ConfigError, TardistillError
from tardistill.models.zoo import build_zoo_detector, coco_classes

# The synthetic shapes have no COCO counterpart; any one-to-one map exercises the gathering.
SHAPES_TO_COCO = dict(zip(SYNTH_CLASSES, range(1, 11)))


@pytest.fixture(scope="module")
def coco_teacher_checkpoint(tmp_path_factory):
    """A randomly initialised R50-FPN v2 with torchvision's 91 COCO outputs, saved as the reference
    script saves its checkpoints (pickled argparse.Namespace included)."""
    torch.manual_seed(0)
    teacher = build_zoo_detector("fasterrcnn_resnet50_fpn_v2", num_classes=len(coco_classes()), pretrained=True)
    path = tmp_path_factory.mktemp("zoo") / "model_25.pth"
    torch.save({"model": teacher.state_dict(), "args": argparse.Namespace(model="fasterrcnn_resnet50_fpn_v2"),
                "epoch": 25}, path)
    return path


def zoo_overrides(tiny_synth, teacher):
    return [f"data.root={tiny_synth}", "model.architecture=fasterrcnn_mobilenet_v3_large_fpn",
            "model.min_size=64", "model.max_size=64", "model.rpn_pre_nms_top_n_train=200",
            "model.rpn_post_nms_top_n_train=100", "model.rpn_pre_nms_top_n_test=100",
            "model.rpn_post_nms_top_n_test=50", "model.box_batch_size_per_image=32",
            "model.rpn_batch_size_per_image=64", "train.iterations=2", "train.batch_size=2",
            "train.warmup_iterations=1", "train.eval_every=0", "train.log_every=1", "train.lr=0.01",
            f"distill.teacher={teacher}", "distill.teacher_architecture=fasterrcnn_resnet50_fpn_v2",
            "distill.teacher_classes=coco",
            *(f"distill.class_map.{name}={label}" for name, label in SHAPES_TO_COCO.items())]


def test_zoo_teacher_distils_fpn_and_heads(tmp_path, tiny_synth, coco_teacher_checkpoint):
    # R50-FPN has levels at strides 4, 8, 16, 32, 64; the MobileNet FPN at 32, 32 and 64, both of
    # whose stride-32 levels imitate R50's
    result = distill(None, [*zoo_overrides(tiny_synth, coco_teacher_checkpoint), "distill.fpn_weight=1.0"],
                     tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) == 2 and all({"kd/fpn", "kd/cls", "kd/reg"} <= set(r) for r in steps)
    student, meta = load_detector(result["checkpoint"])  # a plain torchvision MobileNet Faster R-CNN
    assert meta["classes"] == list(SYNTH_CLASSES)
    assert student.roi_heads.box_predictor.cls_score.out_features == len(SYNTH_CLASSES) + 1


@pytest.fixture(scope="module")
def zoo_pair():
    """fasterrcnn_resnet50_fpn_v2 and fasterrcnn_mobilenet_v3_large_fpn, random, on 64 px inputs."""
    sizes = {"min_size": 64, "max_size": 64, "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
             "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 16}
    torch.manual_seed(0)
    return (build_zoo_detector("fasterrcnn_resnet50_fpn_v2", num_classes=2, pretrained=True, **sizes),
            build_zoo_detector("fasterrcnn_mobilenet_v3_large_fpn", num_classes=2, pretrained=True, **sizes))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_distils_r50_fpn_into_mobilenet_fpn(method, zoo_pair):
    teacher, student = zoo_pair
    student.zero_grad()
    distiller = Distiller(teacher, student, method=method)
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))]
    targets = [{"boxes": torch.tensor([[8.0, 12.0, 44.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = distiller(images, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    total, _ = distiller.weighted_total(losses, 0, 10)
    total.backward()
    if method == "none":
        assert distiller.adapters is None
        return
    assert {name: m.teacher for name, m in distiller.level_matches.items()} == {"0": "3", "1": "3", "pool": "pool"}
    grads = [conv.weight.grad for conv in distiller.adapters.convs.values()]
    assert all(grad is not None for grad in grads) and any(grad.abs().sum() > 0 for grad in grads)


def test_zoo_teacher_on_other_classes_needs_a_map(tmp_path, tiny_synth, coco_teacher_checkpoint):
    overrides = [o for o in zoo_overrides(tiny_synth, coco_teacher_checkpoint) if "class_map" not in o]
    with pytest.raises(ConfigError, match=r"the teacher \(.*model_25.pth\) has no class named circle, hexagon"):
        distill(None, [*overrides, "distill.fpn_weight=0"], tmp_path / "run")
    with pytest.raises(TardistillError, match=r"the weights do not fit the model \(roi_heads.box_predictor"
                                              r".cls_score.weight is \[91, 1024\] in the file, \[3, 1024\]"):
        distill(None, [*overrides, "distill.teacher_classes=[a, b]"], tmp_path / "run")


def test_zoo_teacher_settings_are_checked():
    config = load_config(None, ["distill.teacher=t.safetensors", "distill.teacher_classes=coco"])
    with pytest.raises(ConfigError, match="distill.teacher_classes: only for a teacher named by "
                                          "distill.teacher_architecture"):
        load_teacher(config.distill, config.model)
    config.distill.teacher_architecture = "fasterrcnn_resnet18_fpn"
    with pytest.raises(ConfigError, match="distill.teacher_architecture: unknown architecture"):
        load_teacher(config.distill, config.model)
    config.distill.teacher_architecture, config.distill.teacher_classes = "fasterrcnn_resnet50_fpn", "voc"
    with pytest.raises(ConfigError, match="distill.teacher_classes: name the zoo teacher's classes"):
        load_teacher(config.distill, config.model)


def test_profile_and_distill_cost_build_the_zoo_pair_as_distill_does(tmp_path, tiny_synth, coco_teacher_checkpoint):
    config = load_config(None, [*zoo_overrides(tiny_synth, coco_teacher_checkpoint), "distill.fpn_weight=0"])
    pair = build_pair(config, list(SYNTH_CLASSES))
    assert pair.teacher_classes == coco_classes() and pair.class_map is not None
    assert measure_step_times(config, repeats=1, warmup=0)["distill_step_s"] > 0
    path = tmp_path / "zoo.yaml"
    save_config(config, path)
    # profile's rows without their measurement, which takes a fresh process per model
    rows = {name: (detector, builder) for name, detector, builder, _ in commands._profile_targets([path], [])}
    assert list(rows) == [f"teacher: {coco_teacher_checkpoint}", f"student: {path}"]
    teacher, build_teacher = rows[f"teacher: {coco_teacher_checkpoint}"]
    assert teacher is not pair.teacher and type(build_teacher()) is type(teacher)
