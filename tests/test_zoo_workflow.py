"""The pretrained-teacher workflow of issue 15, through the command line, as a user runs it: a
torchvision fasterrcnn_resnet50_fpn_v2 weights file is checked with eval and predict, distilled into
fasterrcnn_mobilenet_v3_large_fpn with FPN imitation across their differing strides, and the student
is exported to ONNX and checked against PyTorch. Random weights and 64 px images stand in for the
real ones (nothing is downloaded)."""

import json
from pathlib import Path

import torch

from tardistill.cli import main
from tardistill.config import load_config
from tardistill.data.synthetic import SYNTH_CLASSES
from tardistill.models.zoo import build_zoo_detector

CONFIG = Path(__file__).parents[1] / "configs" / "zoo_r50v2_to_mbv3.yaml"
SMALL = ["model.min_size=64", "model.max_size=64", "model.rpn_pre_nms_top_n_train=200",
         "model.rpn_post_nms_top_n_train=100", "model.rpn_pre_nms_top_n_test=100",
         "model.rpn_post_nms_top_n_test=50", "model.rpn_batch_size_per_image=64",
         "model.box_batch_size_per_image=32", "train.iterations=3", "train.batch_size=2",
         "train.warmup_iterations=1", "train.eval_every=0", "train.checkpoint_every=0", "train.log_every=1"]


def cli(capsys, *args) -> str:
    code = main([str(arg) for arg in args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_zoo_teacher_file_to_eval_predict_distill_with_fpn_imitation_and_onnx(tmp_path, capsys):
    data = tmp_path / "synth"
    cli(capsys, "data", "synth", "--out", data, "--num-train", 4, "--num-val", 2, "--num-test", 2,
        "--image-size", 64)
    torch.manual_seed(0)
    teacher = build_zoo_detector("fasterrcnn_resnet50_fpn_v2", num_classes=len(SYNTH_CLASSES), pretrained=True)
    weights = tmp_path / "fasterrcnn_resnet50_fpn_v2_synth.pth"
    torch.save(teacher.state_dict(), weights)  # as torchvision publishes its weights: a plain state dict
    sets = [arg for o in [f"data.root={data}", f"distill.teacher={weights}", *SMALL] for arg in ("--set", o)]
    assert load_config(CONFIG).distill.fpn_weight > 0  # the shipped config imitates the FPN

    # check the teacher first, as distill will load it, and as a weights file of model.architecture
    as_teacher = json.loads(cli(capsys, "eval", CONFIG, "--teacher", *sets, "--json"))
    as_file = json.loads(cli(capsys, "eval", CONFIG, "--checkpoint", weights, *sets,
                             "--set", "model.architecture=fasterrcnn_resnet50_fpn_v2", "--json"))
    assert as_teacher == as_file and "AP" in as_teacher
    cli(capsys, "predict", CONFIG, "--teacher", *sets, "--images", data / "test", "--out", tmp_path / "drawn")
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2

    cli(capsys, "distill", CONFIG, *sets, "--out", tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) == 3 and all(0 < r["kd/fpn"] < float("inf") and "kd/cls" in r for r in steps)

    student = json.loads((tmp_path / "run" / "result.json").read_text())["checkpoint"]
    exported = json.loads(cli(capsys, "export", "--checkpoint", student, "--out", tmp_path / "student.onnx",
                              "--check-images", data / "test", "--json"))
    parity = exported["parity"]
    # at the model's own score threshold, on real test images, with detections to compare
    assert parity["passed"] and parity["images"] == 2 and parity["detections"] > 0, parity
    assert parity["score_threshold"] == 0.05, parity
    assert (tmp_path / "student.onnx").stat().st_size > 0
