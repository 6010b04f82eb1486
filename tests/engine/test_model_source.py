"""eval and predict on a torchvision zoo file: a COCO-class teacher scored on a COCO-format subset
gives its true AP, with every weight from the file."""

import json
import shutil

import pytest
import torch
import yaml

from tardistill import commands
from tardistill.cli import main
from tardistill.config import load_config
from tardistill.engine.model_source import load_model, load_model_on_data_classes
from tardistill.errors import ConfigError
from tardistill.models.zoo import build_zoo_detector, coco_classes
from tardistill.visualize import load_rgb
from torchvision.transforms.functional import pil_to_tensor

ARCHITECTURE = "fasterrcnn_resnet50_fpn"  # random-init R50 features are lively, so scores spread out
PERSON, CAR = 1, 3  # torchvision's COCO labels are COCO category ids
TINY_GT_BOX = [60.0, 60.0, 62.0, 62.0]  # 2 x 2 px: no detection overlaps it with IoU >= 0.5
# person: its one object is the top person detection, AP 1. car: two objects, the top car detection
# and the tiny box, so recall stops at 0.5 with precision 1: 51 of COCO's 101 recall steps (0, 0.01,
# ..., 0.5) have precision 1, the rest 0. IoU is 1 wherever a box is found, so AP = AP50.
EXPECTED_AP = (1 + 51 / 101) / 2


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    """(a torchvision state dict file with COCO's 91 outputs, the model it holds, set up for inference)."""
    torch.manual_seed(0)
    model = build_zoo_detector(ARCHITECTURE, num_classes=len(coco_classes()), pretrained=True, min_size=64,
                               max_size=64).eval()
    with torch.no_grad():  # most detections become people and cars, still with scores that differ
        model.roi_heads.box_predictor.cls_score.bias[[PERSON, CAR]] += 4.0
    path = tmp_path_factory.mktemp("zoo") / "fasterrcnn_resnet50_fpn_coco.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def coco_subset(tmp_path_factory, tiny_synth, zoo_file):
    """A COCO-format test split of one image, with person and car objects built from the model's detections."""
    root = tmp_path_factory.mktemp("coco_subset")
    (root / "test").mkdir()
    image_path = root / "test" / "a.png"
    shutil.copy(sorted((tiny_synth / "test").glob("*.png"))[0], image_path)
    with torch.no_grad():
        (detections,) = zoo_file[1]([pil_to_tensor(load_rgb(image_path)).float() / 255])
    top = {label: detections["boxes"][detections["labels"] == label][0].tolist() for label in (PERSON, CAR)}
    assert not _overlapping(detections["boxes"], TINY_GT_BOX)
    boxes = [(PERSON, top[PERSON]), (CAR, top[CAR]), (CAR, TINY_GT_BOX)]
    annotations = [{"id": i, "image_id": 1, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                   for i, (category, (x1, y1, x2, y2)) in enumerate(boxes, start=1)]
    (root / "annotations").mkdir()
    (root / "annotations" / "test.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "annotations": annotations,
        "categories": [{"id": CAR, "name": "car"}, {"id": PERSON, "name": "person"}]}))
    return root


def _overlapping(boxes, box):
    from torchvision.ops import box_iou

    return bool((box_iou(boxes, torch.tensor([box])) >= 0.5).any())


def cli(*args):
    return main([str(arg) for arg in args])


def zoo_config(tmp_path, coco_subset, **distill):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"format": "coco", "root": str(coco_subset)},
        "model": {"kind": "faster_rcnn", "architecture": ARCHITECTURE, "min_size": 64, "max_size": 64},
        "distill": {"teacher_classes": "coco", **distill}}))
    return path


def test_zoo_file_loads_every_tensor_with_its_box_predictor(tmp_path, coco_subset, zoo_file):
    config = load_config(zoo_config(tmp_path, coco_subset))
    detector, classes, _ = load_model(config, checkpoint=zoo_file[0], teacher=False, data_classes=None)
    assert classes == coco_classes()
    reference = zoo_file[1].state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in detector.state_dict().items())


def test_coco_teacher_gives_its_true_ap_on_a_coco_subset(tmp_path, coco_subset, zoo_file, capsys):
    config = zoo_config(tmp_path, coco_subset)
    # the data's classes (car, person) are found in COCO's by name: no class map needed
    assert cli("eval", config, "--checkpoint", zoo_file[0], "--json") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["AP"] == pytest.approx(EXPECTED_AP) and metrics["AP50"] == pytest.approx(EXPECTED_AP)
    # the same file as the config's teacher
    teacher = zoo_config(tmp_path, coco_subset, teacher=str(zoo_file[0]), teacher_architecture=ARCHITECTURE)
    metrics = commands.evaluate(str(teacher), ["model.architecture=null"], None, split="test", teacher=True)
    assert metrics["AP"] == pytest.approx(EXPECTED_AP)


def test_relabelled_detections_carry_the_datas_labels(tmp_path, coco_subset, zoo_file):
    config = load_config(zoo_config(tmp_path, coco_subset))
    detector = load_model_on_data_classes(config, ["car", "person"], checkpoint=zoo_file[0]).eval()
    with torch.no_grad():
        (output,) = detector([torch.rand(3, 64, 64)])
    assert set(output["labels"].tolist()) <= {1, 2}  # 1 car, 2 person; COCO's other classes are dropped


def test_predict_draws_the_zoo_teacher_on_the_datas_classes(tmp_path, coco_subset, zoo_file, capsys):
    config = zoo_config(tmp_path, coco_subset, teacher=str(zoo_file[0]), teacher_architecture=ARCHITECTURE)
    assert cli("predict", config, "--teacher", "--images", coco_subset / "test", "--out", tmp_path / "drawn",
                 "--score-threshold", "0.1") == 0
    assert (tmp_path / "drawn" / "a.png").is_file()


def test_a_weights_file_needs_an_architecture(tmp_path, coco_subset, zoo_file, capsys):
    config = zoo_config(tmp_path, coco_subset)
    assert cli("eval", config, "--checkpoint", zoo_file[0], "--set", "model.architecture=null") == 2
    assert "not a tardistill checkpoint. To run a torchvision weights file, name its builder in " \
           "model.architecture" in capsys.readouterr().err
    assert cli("eval", config, "--checkpoint", tmp_path / "gone.pth") == 2
    assert "gone.pth: checkpoint not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--teacher: the config names no distill.teacher"):
        load_model(load_config(config), checkpoint=None, teacher=True, data_classes=None)
