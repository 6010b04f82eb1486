"""The command line: bad input gives one line naming the file and the problem, never a traceback."""

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from tardistill.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def coco_copy(tiny_synth, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(tiny_synth, root)
    return root


def train_args(root, tiny_overrides, tmp_path):
    sets = [a for o in tiny_overrides if not o.startswith("data.root") for a in ("--set", o)]
    return ["train", write_config(tmp_path), *sets, "--set", f"data.root={root}", "--out", tmp_path / "run"]


def write_config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"data": {"format": "synth"}}))
    return path


def test_missing_image(tiny_synth, tiny_overrides, tmp_path, capsys):
    root = coco_copy(tiny_synth, tmp_path)
    (root / "train" / "000001.png").unlink()
    code, _, err = run(train_args(root, tiny_overrides, tmp_path), capsys)
    assert code == 2
    assert "000001.png" in one_line_error(err)


def test_unreadable_image(tiny_synth, tiny_overrides, tmp_path, capsys):
    root = coco_copy(tiny_synth, tmp_path)
    for png in (root / "train").glob("*.png"):
        png.write_bytes(b"not a png")
    code, _, err = run(train_args(root, tiny_overrides, tmp_path), capsys)
    assert code == 2
    line = one_line_error(err)
    assert ".png" in line and "train" in line


def test_malformed_json(tiny_synth, tiny_overrides, tmp_path, capsys):
    root = coco_copy(tiny_synth, tmp_path)
    (root / "annotations" / "train.json").write_text("{\"images\": [")
    code, _, err = run(train_args(root, tiny_overrides, tmp_path), capsys)
    assert code == 2 and "train.json" in one_line_error(err)


def test_malformed_detections_file(tiny_synth, tmp_path, capsys):
    detections = tmp_path / "dets.json"
    detections.write_text("[{\"image_id\": 1,")
    code, _, err = run(["evaluate-detections", tiny_synth / "annotations" / "test.json", detections], capsys)
    assert code == 2 and "dets.json" in one_line_error(err)


def voc_root(tmp_path, xml):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / "voc" / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "voc/JPEGImages/a.jpg")
    (tmp_path / "voc/Annotations/a.xml").write_text(xml)
    (tmp_path / "voc/ImageSets/Main/test.txt").write_text("a\n")
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": "a", "category_id": "dog", "bbox": [0, 0, 9, 9],
                                       "score": 0.9}]))
    return tmp_path / "voc", detections


def test_malformed_xml(tmp_path, capsys):
    root, detections = voc_root(tmp_path, "<annotation><object>")
    code, _, err = run(["evaluate-detections", root, detections], capsys)
    assert code == 2 and "a.xml" in one_line_error(err)


def test_unknown_class_name(tmp_path, capsys):
    xml = ("<annotation><size><width>32</width><height>24</height></size><object><name>dragon</name>"
           "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
           "</bndbox></object></annotation>")
    root, detections = voc_root(tmp_path, xml)
    code, _, err = run(["evaluate-detections", root, detections], capsys)
    line = one_line_error(err)
    assert code == 2 and "a.xml" in line and "dragon" in line


def test_voc_evaluate_detections_json(tmp_path, capsys):
    xml = ("<annotation><size><width>32</width><height>24</height></size><object><name>dog</name>"
           "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax>"
           "</bndbox></object></annotation>")
    root, detections = voc_root(tmp_path, xml)
    code, out, _ = run(["evaluate-detections", root, detections, "--metric", "voc07", "--json"], capsys)
    assert code == 0 and json.loads(out)["mAP"] == pytest.approx(1.0)


def test_coco_evaluate_detections_table_and_json(tiny_synth, tmp_path, capsys):
    gt = json.loads((tiny_synth / "annotations" / "test.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps(perfect))
    code, out, _ = run(["evaluate-detections", tiny_synth / "annotations" / "test.json", detections,
                        "--json"], capsys)
    metrics = json.loads(out)
    assert code == 0 and list(metrics)[:3] == ["AP", "AP50", "AP75"] and metrics["AP"] == pytest.approx(1.0)
    code, out, _ = run(["evaluate-detections", tiny_synth / "annotations" / "test.json", detections], capsys)
    assert code == 0 and "AP50" in out


def test_unknown_config_key(tmp_path, capsys):
    code, _, err = run(["train", write_config(tmp_path), "--set", "train.iteratons=3"], capsys)
    assert code == 2 and "train.iteratons" in one_line_error(err)


def test_predict_draws_pngs(tiny_synth, tiny_overrides, tmp_path, capsys):
    code, out, _ = run(train_args(tiny_synth, tiny_overrides, tmp_path), capsys)
    assert code == 0 and "AP" in out
    code, out, _ = run(["predict", write_config(tmp_path), "--checkpoint", tmp_path / "run/final.safetensors",
                        "--images", tiny_synth / "test", "--out", tmp_path / "drawn"], capsys)
    assert code == 0 and len(list((tmp_path / "drawn").glob("*.png"))) == 4


def test_profile_reports_parameters_and_latency(untrained_teacher, capsys):
    code, out, _ = run(["profile", untrained_teacher, "--json"], capsys)
    row = json.loads(out)[str(untrained_teacher)]
    assert code == 0 and row["params_M"] > 0 and row["cpu_ms_batch1"] > 0 and row["cpu_ms_batch8"] > 0


def test_bad_voc_record_is_one_line(tmp_path, capsys):
    xml = ("<annotation><size><width>nan</width><height>24</height></size></annotation>")
    root, detections = voc_root(tmp_path, xml)
    code, _, err = run(["evaluate-detections", root, detections], capsys)
    line = one_line_error(err)
    assert code == 2 and "a.xml" in line and "<width> is nan" in line


def test_bad_coco_record_is_one_line(tiny_synth, tiny_overrides, tmp_path, capsys):
    root = coco_copy(tiny_synth, tmp_path)
    coco = json.loads((root / "annotations" / "train.json").read_text())
    coco["annotations"][2]["bbox"] = "0123"
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    code, _, err = run(train_args(root, tiny_overrides, tmp_path), capsys)
    line = one_line_error(err)
    assert code == 2 and "train.json" in line and "annotations[2]" in line


def test_skipped_bad_samples_are_counted_in_the_result(tiny_synth, tiny_overrides, tmp_path, capsys):
    root = coco_copy(tiny_synth, tmp_path)
    (root / "train" / "000001.png").write_bytes(b"not a png")
    args = [*train_args(root, tiny_overrides, tmp_path), "--set", "data.on_bad_sample=skip"]
    code, _, _ = run(args, capsys)
    skipped = json.loads((tmp_path / "run" / "result.json").read_text())["skipped_samples"]
    assert code == 0 and skipped["count"] == 1 and "000001.png: cannot read image" in skipped["reasons"][0]


def test_nan_loss_is_one_line_naming_term_and_step(tiny_synth, tiny_overrides, tmp_path, capsys, monkeypatch):
    import torch

    from tardistill.engine import runs

    class NaNClassifierLoss(runs.PrefixedLosses):
        def forward(self, images, targets):
            return {**super().forward(images, targets), "det/loss_classifier": torch.tensor(float("nan"))}

    monkeypatch.setattr(runs, "PrefixedLosses", NaNClassifierLoss)
    code, _, err = run(train_args(tiny_synth, tiny_overrides, tmp_path), capsys)
    line = one_line_error(err)
    assert code == 2 and "step 1: loss term det/loss_classifier is nan" in line


@pytest.mark.parametrize("args, message", [
    (["predict", "--score-threshold", "nan", "--images", "imgs", "--out", "drawn"],
     "error: --score-threshold must be in [0, 1], got nan"),
    (["export", "--image-size", "0", "--out", "model.onnx"], "error: --image-size must be in [32, 4096], got 0"),
    (["export", "--image-size", "-64", "--out", "model.onnx"], "error: --image-size must be in [32, 4096], got -64"),
])
def test_command_line_numbers_are_range_checked_before_anything_runs(tmp_path, capsys, args, message):
    command, *options = args
    config = [write_config(tmp_path)] if command == "predict" else []
    code, _, err = run([command, *config, "--checkpoint", tmp_path / "none.safetensors", *options], capsys)
    assert code == 2 and one_line_error(err) == message


def test_an_out_of_range_config_number_is_one_line(tmp_path, capsys):
    code, _, err = run(["train", write_config(tmp_path), "--set", "train.batch_size=0"], capsys)
    assert code == 2 and one_line_error(err).endswith("key 'train.batch_size' must be >= 1, got 0")


def _perfect_detections(gt, tmp_path, skip=()):
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                       "score": 1.0} for i, a in enumerate(gt["annotations"]) if i not in skip]))
    return detections


def test_evaluate_detections_refuses_ground_truth_that_training_refuses(tiny_synth, tmp_path, capsys):
    gt = json.loads((tiny_synth / "annotations" / "test.json").read_text())
    gt["images"].append(dict(gt["images"][0]))  # the same image listed twice
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    code, _, err = run(["evaluate-detections", tmp_path / "gt.json", _perfect_detections(gt, tmp_path)], capsys)
    assert code == 2 and one_line_error(err) == f"error: {tmp_path / 'gt.json'}: duplicate image ids in 'images'"


def test_evaluate_detections_drops_the_boxes_training_drops(tiny_synth, tmp_path, capsys):
    gt = json.loads((tiny_synth / "annotations" / "test.json").read_text())
    x, y, w, h = gt["annotations"][0]["bbox"]
    gt["annotations"][0]["bbox"] = [x + w, y, -w, h]  # negative width: no object, in training as here
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    detections = _perfect_detections(gt, tmp_path, skip={0})
    with pytest.warns(UserWarning, match=r"gt.json \(image .*\): annotation id .* has an empty box .*; dropped"):
        code, out, _ = run(["evaluate-detections", tmp_path / "gt.json", detections, "--json"], capsys)
    assert code == 0 and json.loads(out)["AR100"] == pytest.approx(1.0)  # the dropped box is not a missed object


def test_eval_and_predict_refuse_model_keys_the_checkpoint_fixes(untrained_teacher, tiny_synth, tmp_path, capsys):
    common = [write_config(tmp_path), "--checkpoint", untrained_teacher, "--set", f"data.root={tiny_synth}",
              "--set", "model.backbone=resnet101"]
    for command in (["eval", *common], ["predict", *common, "--images", tiny_synth / "test", "--out", tmp_path / "p"]):
        code, _, err = run(command, capsys)
        assert code == 2 and one_line_error(err).startswith("error: model.backbone: ")
    assert not (tmp_path / "p").exists()


def test_eval_applies_a_score_threshold(untrained_teacher, tiny_synth, tmp_path, capsys):
    args = ["eval", write_config(tmp_path), "--checkpoint", untrained_teacher, "--set", f"data.root={tiny_synth}",
            "--json"]
    code, out, _ = run([*args, "--set", "model.score_threshold=1.0"], capsys)
    assert code == 0 and json.loads(out)["AR100"] == 0  # torchvision keeps scores above the threshold: none


def test_an_unforeseen_file_system_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    from tardistill import commands

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/exp/metrics.jsonl")
    monkeypatch.setattr(commands, "train", disk_full)
    code, _, err = run(["train", write_config(tmp_path)], capsys)
    assert code == 2 and one_line_error(err) == "error: runs/exp/metrics.jsonl: No space left on device"


def test_bench_reproduce_refuses_a_group_that_cannot_be_seeded(capsys, tmp_path):
    code, _, err = run(["bench", "reproduce", "--seed-group", "sensitivity", "--report-only", "--out", tmp_path / "sweep",
                        "--docs", tmp_path / "docs"], capsys)
    assert code != 0 and "--seed-group" in one_line_error(err) and "sensitivity" in err
    assert not (tmp_path / "docs").exists()  # nothing written
