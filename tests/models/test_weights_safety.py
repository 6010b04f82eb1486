"""Local weight files are read without running anything they hold: reference-script checkpoints load,
payloads that would run code are refused or made inert, tampered safetensors are refused."""

import argparse
import json
import logging
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from tardistill.errors import TardistillError
from tardistill.models.weights import load_detector_weights, read_state_dict

WEIGHTS = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}


def write_marker(path):
    """What a payload would run; any name outside torch's allowlist stands in for an attacker's."""
    with open(path, "w") as handle:
        handle.write("ran")


class CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsExec(CallsSystem):
    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class CallsOpen(CallsSystem):
    def __reduce__(self):
        return open, (str(self.marker), "w")


class CallsUnknownFunction(CallsSystem):
    def __reduce__(self):
        return write_marker, (str(self.marker),)


def reference_checkpoint(args):
    """The layout torchvision's detection reference script saves."""
    return {"model": dict(WEIGHTS), "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]},
            "lr_scheduler": {"milestones": {16: 1, 22: 1}, "last_epoch": 3}, "args": args, "epoch": 3}


def test_reference_script_checkpoint_loads_its_model_weights(tmp_path, caplog):
    path = tmp_path / "model_25.pth"
    torch.save(reference_checkpoint(argparse.Namespace(lr=0.02, output_dir="out", data_path=None)), path)
    with caplog.at_level(logging.WARNING, logger="tardistill.models.weights"):
        state = read_state_dict(path)
    assert state.keys() == WEIGHTS.keys()
    assert all(torch.equal(state[k], WEIGHTS[k]) for k in WEIGHTS)
    assert "argparse.Namespace" in caplog.text and "never imported or run" in caplog.text


@pytest.mark.parametrize("payload, called", [
    (CallsSystem, "posix.system" if os.name == "posix" else "nt.system"),
    (CallsExec, "builtins.exec"),
    (CallsOpen, "io.open"),  # builtins.open is io.open
])
def test_code_running_payload_in_a_torch_file_is_refused_unrun(tmp_path, payload, called):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(reference_checkpoint(payload(marker)), path)
    with pytest.raises(TardistillError, match=rf"evil.pth: refused: its pickle calls {called}.*nothing in it was executed"):
        read_state_dict(path)
    assert not marker.exists()


def test_code_running_plain_pickle_is_refused_unrun(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(CallsSystem(marker), protocol=2))
    with pytest.raises(TardistillError, match=r"evil.pth: refused to load .*GLOBAL (posix|nt).system"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))
    with pytest.raises(TardistillError, match="scripted.pt: a TorchScript archive holds code"):
        read_state_dict(path)


def test_unknown_function_becomes_an_inert_stand_in(tmp_path, caplog):
    marker = tmp_path / "marker"
    path = tmp_path / "ref.pth"
    torch.save(reference_checkpoint(CallsUnknownFunction(marker)), path)
    with caplog.at_level(logging.WARNING, logger="tardistill.models.weights"):
        state = read_state_dict(path)
    assert not marker.exists()  # the stand-in was "called", the function was not
    assert torch.equal(state["layer.bias"], WEIGHTS["layer.bias"])
    assert "write_marker" in caplog.text
    torch.load(path, weights_only=False)  # the payload is live: an unguarded load runs it
    assert marker.read_text() == "ran"


def test_refused_object_in_place_of_a_tensor_is_an_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {"layer.weight": argparse.Namespace(x=1)}}, path)
    with pytest.raises(TardistillError, match=r"odd.pth: expected a state dict of tensors.*argparse.Namespace"):
        read_state_dict(path)


def test_whole_pickled_model_is_refused_with_advice(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(3, 2), path)  # the module's class would have to be imported to rebuild it
    with pytest.raises(TardistillError, match=r"<refused torch.nn.modules.linear.Linear>.*save the model's state_dict"):
        read_state_dict(path)


def _tampered(tmp_path, name, edit):
    """A valid safetensors file whose header `edit` rewrites: (header dict, rest of file) -> bytes."""
    path = tmp_path / "good.safetensors"
    save_file(WEIGHTS, str(path))
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    bad = tmp_path / name
    bad.write_bytes(edit(json.loads(raw[8:8 + length]), raw[8 + length:]))
    return bad


def _with_header(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("edit", [
    lambda header, data: struct.pack("<Q", 10**12) + json.dumps(header).encode() + data,  # length lies
    lambda header, data: _with_header({**header, "layer.bias": {**header["layer.bias"],
                                                                "data_offsets": [0, 10**6]}}, data),
    lambda header, data: _with_header({**header, "layer.weight": {**header["layer.weight"], "shape": [40, 3]}},
                                      data),
    lambda header, data: _with_header({**header, "layer.bias": {**header["layer.bias"], "dtype": "PICKLE"}},
                                      data),
    lambda header, data: _with_header(header, data)[:8] + b"{not json" + data,
    lambda header, data: _with_header(header, data)[:-3],  # truncated
], ids=["length", "offsets", "shape", "dtype", "json", "truncated"])
def test_tampered_safetensors_header_is_refused(tmp_path, edit):
    bad = _tampered(tmp_path, "bad.safetensors", edit)
    with pytest.raises(TardistillError, match="bad.safetensors: not a readable safetensors file"):
        read_state_dict(bad)


def test_strict_loading_names_what_does_not_fit(tmp_path):
    model = torch.nn.Sequential()
    model.add_module("layer", torch.nn.Linear(3, 4))  # the file's layer has 2 outputs
    path = tmp_path / "w.safetensors"
    save_file(WEIGHTS, str(path))
    with pytest.raises(TardistillError, match=r"layer.weight is \[2, 3\] in the file, \[4, 3\] in the model"):
        load_detector_weights(model, path, strict=True)
