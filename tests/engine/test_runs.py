"""End-to-end runs on tiny data: outputs, resume after an interruption, reproducibility."""

import json

import pytest
import torch

from tardistill.commands import evaluate, train
from tardistill.config import load_config
from tardistill.engine import runs
from tardistill.engine.setup import load_detector
from tardistill.models.checkpoint import load_checkpoint


def test_train_writes_every_output(tmp_path, tiny_overrides):
    result = train(None, tiny_overrides, tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "final.safetensors",
                 "last_state.safetensors", "result.json"):
        assert (tmp_path / name).is_file(), name
    assert result["step"] == 4 and set(result["test_metrics"]) >= {"AP", "AP50", "AR100"}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4]
    assert list(tmp_path.glob("tensorboard/events.*"))
    detector, meta = load_detector(tmp_path / "final.safetensors")
    assert meta["classes"][0] == "circle" and meta["step"] == 4
    assert result["checkpoint"] == str(tmp_path / "best.safetensors")  # picked on val, scored on test
    assert evaluate(None, tiny_overrides, tmp_path / "best.safetensors", split="test") == pytest.approx(
        result["test_metrics"])


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tiny_overrides, monkeypatch):
    config = load_config(None, [*tiny_overrides, "train.eval_every=0"])
    runs.train_detector(config, tmp_path / "straight")

    real_stream = runs.batch_stream

    def interrupted_stream(*args, **kwargs):
        make = real_stream(*args, **kwargs)

        def batches(start_step):
            stream, step = make(start_step), start_step
            while True:
                if step == 3:  # Ctrl-C between two steps
                    raise KeyboardInterrupt
                yield next(stream)
                step += 1
        return batches

    monkeypatch.setattr(runs, "batch_stream", interrupted_stream)
    with pytest.raises(KeyboardInterrupt):
        runs.train_detector(config, tmp_path / "resumed")
    tensors, meta = load_checkpoint(tmp_path / "resumed" / "last_state.safetensors")
    assert meta["trainer"]["step"] == 3  # the completed steps were saved on the way out
    monkeypatch.setattr(runs, "batch_stream", real_stream)
    runs.train_detector(config, tmp_path / "resumed", resume=True)

    straight, _ = load_checkpoint(tmp_path / "straight" / "final.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "final.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def strict_json(text):
    """json.loads as strict parsers (JavaScript, Go, jq) read: NaN and Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_result_json_is_strict_json_with_a_reason_for_each_null(tmp_path, tiny_overrides):
    train(None, [*tiny_overrides, "train.eval_every=0"], tmp_path)  # no validation: no best metric
    result = strict_json((tmp_path / "result.json").read_text())
    assert result["best_metric"] is None and result["best_step"] == -1
    assert result["null_reasons"] == {
        "best_metric": "no validation ran (train.eval_every: 0); the checkpoint is the final one"}
    assert result["checkpoint"] == str(tmp_path / "final.safetensors")


def test_splits_that_disagree_stop_the_run_before_it_writes_anything(tmp_path, tiny_synth, tiny_overrides):
    import shutil

    from tardistill.errors import DataError

    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    coco = json.loads((root / "annotations" / "train.json").read_text())
    coco["categories"].append({"id": 99, "name": "giraffe"})  # a class the val and test splits lack
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="val.json: its categories differ from the train split's"):
        train(None, [*tiny_overrides, f"data.root={root}"], tmp_path / "run")
    assert not (tmp_path / "run").exists()
