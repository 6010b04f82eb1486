"""Checkpoints and local weight files: safetensors round trip, no arbitrary unpickling."""

import argparse

import pytest
import torch

from tardistill.errors import TardistillError
from tardistill.models.build import build_detector
from tardistill.models.checkpoint import (flatten_optimizer_state, load_checkpoint, read_checkpoint_meta,
                                          save_model, unflatten_optimizer_state)
from tardistill.models.weights import read_state_dict


def tiny():
    return build_detector("faster_rcnn", "resnet18", num_classes=2, width_multiplier=0.125, fpn_channels=16,
                          head_width=32, min_size=64, max_size=64)


def test_model_round_trip_with_metadata(tmp_path):
    model = tiny()
    path = save_model(tmp_path / "m.safetensors", model, {"classes": ["a", "b"], "step": 3})
    tensors, meta = load_checkpoint(path)
    assert meta == {"classes": ["a", "b"], "step": 3} == read_checkpoint_meta(path)
    fresh = tiny()
    fresh.load_state_dict(tensors, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    assert not list(tmp_path.glob("*.tmp"))  # the write was atomic


def test_optimizer_state_round_trip():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.sum().backward()
    optimizer.step()
    tensors, rest = flatten_optimizer_state(optimizer.state_dict())
    restored = unflatten_optimizer_state(tensors, rest)
    assert torch.equal(restored["state"][0]["momentum_buffer"], optimizer.state[param]["momentum_buffer"])
    assert restored["param_groups"] == optimizer.state_dict()["param_groups"]


def test_not_a_checkpoint_is_one_line_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(TardistillError, match="x.safetensors: not a tardistill checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(TardistillError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_torch_file_gives_only_the_model_tensors(tmp_path):
    # pickled objects beside the weights are refused, never run (tests/models/test_weights_safety.py)
    path = tmp_path / "ref.pth"
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    assert list(read_state_dict(path)) == ["w"]
    plain = tmp_path / "plain.pth"
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 3}, plain)
    assert torch.equal(read_state_dict(plain)["w"], torch.ones(1))


def test_local_torchvision_backbone_weights_are_loaded(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    model = build_detector("faster_rcnn", "resnet18", num_classes=2, fpn_channels=16, head_width=32,
                           backbone_weights=str(path))
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer4.1.conv2.weight"], reference.state_dict()["layer4.1.conv2.weight"])


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(TardistillError, match="nope.pth: weights file not found"):
        build_detector("faster_rcnn", "resnet18", num_classes=2, backbone_weights=str(tmp_path / "nope.pth"))
