"""`tardistill compare`: the table and the plot come from what run folders hold, for any runs."""

import json
import shutil

import pytest
from PIL import Image

from tardistill.cli import main
from tardistill.compare import compare_runs, format_comparison
from tardistill.config import load_config, save_config
from tardistill.models.build import count_parameters
from tardistill.engine.setup import load_detector


def write_run(run_dir, *, data_format, val, test=None, parameters=None):
    """A run folder as train and distill leave it: config.yaml, metrics.jsonl, result.json once finished."""
    save_config(load_config(None, [f"data.format={data_format}"]), run_dir / "config.yaml")
    records = [{"step": 1, "kind": "train", "loss": 2.0}, *({"kind": "val", **r} for r in val)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if test is not None:
        (run_dir / "result.json").write_text(json.dumps({"test_metrics": test, "parameters": parameters}))
    return run_dir


@pytest.fixture()
def runs(tmp_path):
    coco = write_run(tmp_path / "student", data_format="coco", parameters=1_500_000,
                     val=[{"step": 2, "AP": 0.1, "AP50": 0.2}, {"step": 4, "AP": 0.3, "AP50": 0.5},
                          {"step": 6, "AP": 0.25, "AP50": 0.6}],
                     test={"AP": 0.28, "AP50": 0.55, "APl": -1.0})
    voc = write_run(tmp_path / "voc_teacher", data_format="voc", parameters=15_000_000,
                    val=[{"step": 5, "mAP": 0.4, "aeroplane": 0.4}], test={"mAP": 0.45})
    unfinished = write_run(tmp_path / "running", data_format="coco", val=[])
    return [coco, voc, unfinished]


def test_rows_hold_test_metrics_and_the_best_validation_step(runs, tmp_path):
    rows = compare_runs(runs, plot=tmp_path / "curves.png", latency_repeats=0)
    student, voc, unfinished = rows
    # validation is read at its best AP (step 4), as the best checkpoint was picked
    assert (student["val_ap"], student["val_ap50"], student["val_step"]) == (0.3, 0.5, 4)
    assert (student["test_ap"], student["test_ap50"], student["params_M"]) == (0.28, 0.55, 1.5)
    assert (voc["test_ap"], voc["test_ap50"], voc["val_ap50"]) == (None, 0.45, 0.4)  # VOC mAP is AP at IoU 0.5
    assert unfinished["test_ap"] is None and unfinished["val_step"] is None and unfinished["cpu_ms"] is None
    lines = format_comparison(rows).splitlines()
    assert lines[0].split()[:5] == ["run", "test", "AP", "test", "AP50"]
    assert lines[2].split()[1:6] == ["28.0", "55.0", "30.0", "50.0", "4"] and lines[2].split()[6] == "1.50"
    assert lines[3].split()[1:4] == ["-", "45.0", "-"]
    with Image.open(tmp_path / "curves.png") as png:
        assert png.format == "PNG" and png.width > 300


def test_latency_and_parameters_are_measured_on_the_checkpoint(tmp_path, untrained_teacher):
    run = write_run(tmp_path / "run", data_format="synth", val=[{"step": 2, "AP": 0.1, "AP50": 0.2}])
    shutil.copy(untrained_teacher, run / "best.safetensors")
    (row,) = compare_runs([run], plot=None, latency_repeats=1)
    assert row["params_M"] == pytest.approx(count_parameters(load_detector(untrained_teacher)[0]) / 1e6)
    assert row["cpu_ms"] > 0


def test_cli_prints_a_markdown_table_and_writes_the_plot(runs, tmp_path, capsys):
    plot = tmp_path / "out" / "val_ap.png"
    assert main(["compare", *map(str, runs), "--repeats", "0", "--plot", str(plot), "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | test AP | test AP50 | val AP | val AP50 |") and out[1].startswith("| --- |")
    assert out[-1] == f"plot: {plot}" and plot.is_file()
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder (no metrics.jsonl)" in capsys.readouterr().err
