"""A save that fails half-way never replaces a good checkpoint, and --resume never reads a partial file."""

from pathlib import Path

import pytest
import torch

from tardistill.config import load_config
from tardistill.engine import runs
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
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"w": torch.zeros(100)}, {"step": 2})
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 1} and torch.equal(tensors["w"], torch.ones(100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]  # no partial file left


def test_training_resumes_from_the_last_complete_state_after_a_failed_save(tmp_path, tiny_overrides, monkeypatch):
    config = load_config(None, [*tiny_overrides, "train.iterations=6", "train.eval_every=0"])
    runs.train_detector(config, tmp_path / "straight")

    # Saves: step 2 succeeds; step 4 fails half-way, and so does the save on the way out.
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(checkpoint.save_file, fail_from_call=2))
    with pytest.raises(OSError, match="No space left"):
        runs.train_detector(config, tmp_path / "broken")
    _, meta = load_checkpoint(tmp_path / "broken" / "last_state.safetensors")
    assert meta["trainer"]["step"] == 2
    monkeypatch.undo()

    runs.train_detector(config, tmp_path / "broken", resume=True)
    straight, _ = load_checkpoint(tmp_path / "straight" / "final.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "broken" / "final.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
