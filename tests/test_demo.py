"""The demo's fast preset runs every stage and writes its table, summary and example image."""

import json

from tardistill.demo import run_demo


def test_fast_demo_runs_all_stages(tmp_path, capsys):
    rows = run_demo(tmp_path, fast=True)
    assert list(rows) == ["teacher", "student", "tar_student"]
    assert rows["student"]["params_M"] < rows["teacher"]["params_M"] / 5
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert (tmp_path / "examples.png").stat().st_size > 0
    assert "outputs:" in capsys.readouterr().out
    run_demo(tmp_path, fast=True)  # a second run reuses every finished stage
