"""Terminal tables: exact lines for a flat dict and for teacher/student rows."""

import pytest

from tardistill.metrics import format_metrics_table


def test_flat_dict_is_two_columns():
    table = format_metrics_table({"AP": 0.3721, "AP50": 0.58, "APs": -1.0}, title="COCO val")
    assert table.splitlines() == [
        "COCO val",
        "metric  value",
        "------  -----",
        "AP       37.2",
        "AP50     58.0",
        "APs         -",  # COCO's -1: no small objects in the ground truth
    ]


def test_rows_share_metric_columns():
    rows = {"teacher": {"AP": 0.4012, "AP50": 0.6149}, "student": {"AP": 0.3349, "AR100": 1.0}}
    assert format_metrics_table(rows).splitlines() == [
        "           AP  AP50  AR100",
        "-------  ----  ----  -----",
        "teacher  40.1  61.5      -",
        "student  33.5     -  100.0",
    ]


def test_mixed_input_is_rejected():
    with pytest.raises(TypeError, match="not a mix"):
        format_metrics_table({"teacher": {"AP": 0.4}, "AP": 0.3})
