"""torchvision model-zoo detectors: built without downloads, set up for local weights as torchvision does."""

import argparse

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.ops.misc import FrozenBatchNorm2d

from tardistill.config import config_to_dict, load_config
from tardistill.engine.setup import detector_from_config, load_detector
from tardistill.errors import ConfigError
from tardistill.models.build import build_detector
from tardistill.models.checkpoint import save_model
from tardistill.models.zoo import build_zoo_detector, coco_classes

MOBILENET = ["model.architecture=fasterrcnn_mobilenet_v3_large_fpn", "model.min_size=64", "model.max_size=64"]


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="model.architecture: unknown architecture 'yolo'.*fasterrcnn_resnet50_fpn_v2"):
        build_detector("faster_rcnn", "resnet18", num_classes=3, architecture="yolo")
    with pytest.raises(ConfigError, match="model.kind: retinanet_resnet50_fpn is a retinanet detector"):
        build_detector("faster_rcnn", "resnet18", num_classes=3, architecture="retinanet_resnet50_fpn")


def test_reference_checkpoint_weights_load_into_a_zoo_model(tmp_path):
    config = load_config(None, MOBILENET)
    source = detector_from_config(config.model, 3)
    path = tmp_path / "model_25.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(model="fasterrcnn_mobilenet_v3_large_fpn"),
                "epoch": 25}, path)
    model = detector_from_config(load_config(None, [*MOBILENET, f"model.weights={path}"]).model, 3)
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded and all(torch.equal(value, expected[key]) for key, value in loaded.items())
    assert model.transform.min_size == (64,) and model.transform.max_size == 64  # the config's size
    # as torchvision sets up its own pretrained MobileNet: frozen batch norm, the first stages frozen
    body = model.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    frozen = {name.split(".")[0] for name, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {str(i) for i in range(7)}  # blocks before the third-last stage (block 7)


def test_saved_zoo_model_rebuilds_after_its_weight_file_is_gone(tmp_path):
    weights = tmp_path / "coco.pth"
    torch.save(detector_from_config(load_config(None, MOBILENET).model, 3).state_dict(), weights)
    config = load_config(None, [*MOBILENET, f"model.weights={weights}"])
    assert config.model.pretrained_setup is True  # resolved on loading, and saved with the run
    model = detector_from_config(config.model, 3)
    checkpoint = save_model(tmp_path / "best.safetensors", model,
                            {"config": config_to_dict(config), "classes": ["a", "b", "c"]})
    weights.unlink()
    rebuilt, _ = load_detector(checkpoint)  # strict: frozen batch norm again, not BatchNorm2d
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.backbone.body.modules())


def test_pretrained_resnet_is_set_up_like_torchvision():
    model = build_zoo_detector("fasterrcnn_resnet50_fpn", num_classes=3, pretrained=True, min_size=64, max_size=64)
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # background added


def test_retinanet_v2_takes_the_configs_settings():
    model = build_detector("retinanet", "resnet18", num_classes=3, architecture="retinanet_resnet50_fpn_v2",
                           min_size=96, max_size=96, score_threshold=0.2, detections_per_image=7)
    assert isinstance(model, RetinaNet)
    assert model.head.classification_head.num_classes == 4
    assert (model.score_thresh, model.detections_per_img, model.transform.min_size) == (0.2, 7, (96,))


def test_imagenet_mobilenet_weights_fill_the_detection_body(tmp_path):
    reference = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet_v3_large-imagenet.pth"
    torch.save(reference.state_dict(), path)  # keys under `features.`, as torchvision saves them
    model = build_detector("faster_rcnn", "mobilenet_v3_large", num_classes=2, anchor_sizes=[16, 32, 64],
                           head_width=32, backbone_weights=str(path))
    assert torch.equal(model.backbone.body.state_dict()["16.0.weight"], reference.features[16][0].weight)


def test_coco_class_list_is_indexed_by_category_id():
    classes = coco_classes()
    assert len(classes) == 90 and classes[0] == "person" and classes[90 - 1] == "toothbrush"
    assert classes[3 - 1] == "car" and classes[12 - 1] == "N/A"  # COCO category 12 is unused
