"""A save that fails half-way never replaces a good checkpoint, and --resume never reads a partial file."""

from pathlib import Path

import pytest
import torch

from tardistill.config import load_config
from tardistill.engine import runs
from tardistill.errors import StorageError
from tardistill.models import checkpoint
from tardistill.models.checkpoint import load_checkpoint, save_checkpoint


def failing_writer(real_save_file, *, fail_from_call):
    """A safetensors writer that, from call `fail_from_call` on, leaves half a file and raises."""
    calls = []

    def write(tensors, filename, metadata=None):
        calls.append(filename)
        real_save_file(tensors, filename, metadata=metadata)
        if len(calls) >= fail_from_call:
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
    return write


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "state.safetensors"
    save_checkpoint(path, {"w": torch.ones(100)}, {"step": 1})
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(checkpoint.save_file, fail_from_call=1))
    with pytest.raises(StorageError, match=f"{path}: cannot write the checkpoint \\(No space left on device\\); "
                       "the previous state.safetensors, if any, is unchanged"):
        save_checkpoint(path, {"w": torch.zeros(100)}, {"step": 2})
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 1} and torch.equal(tensors["w"], torch.ones(100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]  # no partial file left


def test_training_resumes_from_the_last_complete_state_after_a_failed_save(tmp_path, tiny_overrides, monkeypatch):
    config = load_config(None, [*tiny_overrides, "train.iterations=6", "train.eval_every=0"])
    runs.train_detector(config, tmp_path / "straight")

    # Saves: step 2 succeeds; step 4 fails half-way, and so does the save on the way out.
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(checkpoint.save_file, fail_from_call=2))
    with pytest.raises(StorageError, match="last_state.safetensors: cannot write the checkpoint"):
        runs.train_detector(config, tmp_path / "broken")
    _, meta = load_checkpoint(tmp_path / "broken" / "last_state.safetensors")
    assert meta["trainer"]["step"] == 2
    monkeypatch.undo()

    runs.train_detector(config, tmp_path / "broken", resume=True)
    straight, _ = load_checkpoint(tmp_path / "straight" / "final.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "broken" / "final.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, tiny_overrides, monkeypatch, capsys):
    from tardistill.cli import main

    config = tmp_path / "exp.yaml"
    config.write_text("data: {format: synth}\n")
    sets = [arg for item in [*tiny_overrides, "train.eval_every=0"] for arg in ("--set", item)]
    # The save at step 2 succeeds; the disk is full from the one at step 4 on.
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(checkpoint.save_file, fail_from_call=2))
    code = main(["train", str(config), *sets, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    state = tmp_path / "run" / "last_state.safetensors"
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {state}: cannot write the checkpoint (No space left on device); "
                                            "the previous last_state.safetensors, if any, is unchanged")
    monkeypatch.undo()
    assert load_checkpoint(state)[1]["trainer"]["step"] == 2
