"""Report numbers from hand-made run records: mean ± std rows and the claims verdicts."""

import pytest

from tardistill.bench.summary import baseline_rows, claims, component_rows, mean_std, verdict


def record(method, variant="default", seed=0, ap=0.3, detector="faster_rcnn", group="components"):
    return {"detector": detector, "method": method, "variant": variant, "seed": seed, "group": group,
            "ap": ap, "ap50": ap + 0.2}


def test_mean_std_in_points():
    assert mean_std([0.30]) == "30.0"
    assert mean_std([0.30, 0.32, 0.34]) == "32.0 ± 2.0"
    assert mean_std([float("nan")]) == "-"


@pytest.mark.parametrize("difference, expected", [
    ((2.0, 0.5), "held (+2.0 AP, seed std 0.5)"),
    ((-2.0, 0.5), "did not hold (-2.0 AP, seed std 0.5)"),
    ((0.4, 0.5), "within seed noise (+0.4 AP, seed std 0.5)"),
    ((0.4, 0.0), "held (+0.4 AP, one seed)"),
    (None, "not measured (runs missing)"),
])
def test_verdict(difference, expected):
    assert verdict(difference) == expected


def test_component_rows_average_seeds_in_order():
    records = [record("teacher", group="reference", ap=0.5),
               *(record("none", "student", seed=s, ap=0.30 + 0.01 * s) for s in range(3)),
               *(record("tar", "full", seed=s, ap=0.40) for s in range(2))]
    rows = component_rows(records)
    assert [r.label for r in rows] == ["teacher", "student alone", "full method, linear decay"]
    assert rows[1].n == 3 and rows[1].mean_ap == pytest.approx(0.31)
    assert rows[1].std_ap == pytest.approx(0.01)


def test_claims_on_constructed_records():
    records = [record("teacher", group="reference", ap=0.50),
               *(record("none", "student", seed=s, ap=a) for s, a in enumerate((0.30, 0.31, 0.29))),
               *(record("tar", "full", seed=s, ap=a) for s, a in enumerate((0.40, 0.41, 0.39))),
               *(record("tar", "full_no_decay", seed=s, ap=a) for s, a in enumerate((0.40, 0.40, 0.40))),
               *(record("tar", "fpn_only", seed=s, ap=a) for s, a in enumerate((0.30, 0.32, 0.31))),
               record("tar", "cls_gate=all", ap=0.35, group="choices"),
               *(record("none", "student", seed=s, ap=a, detector="retinanet") for s, a in enumerate((0.10, 0.12))),
               *(record("tar", "full", seed=s, ap=a, detector="retinanet") for s, a in enumerate((0.13, 0.15)))]
    found = dict(claims(records))
    reach = found["The TAR student reaches the teacher"]
    assert reach.startswith("did not hold (-10.0 AP") and "closes 50% of the teacher-student gap" in reach
    assert found["+ Gaussian FPN only adds AP over the student alone"] == "within seed noise (+1.0 AP, seed std 1.0)"
    assert found["Distillation decay helps (full with linear decay vs without)"].startswith("within seed noise")
    assert found["Adaptive gating beats ungated (classification gate adaptive vs all RoIs)"] == "held (+5.0 AP, one seed)"
    assert found["+ regression head only adds AP over the student alone"] == "not measured (runs missing)"
    assert found["TAR beats fgd"] == "not measured (runs missing)"
    assert not any(claim.startswith("TAR with its open choices tuned") for claim in found)  # no tuned runs
    assert (found["On RetinaNet, the TAR student beats the student alone (paper: +2.3 AP)"]
            == "held (+3.0 AP, seed std 1.4)")


def test_tuned_tar_is_compared_with_the_best_baseline():
    records = [*(record("none", "student", seed=s, ap=0.30) for s in range(2)),
               record("fitnet", group="baselines", ap=0.33), record("fgd", group="baselines", ap=0.36),
               *(record("tar", "tuned", seed=s, ap=a, group="tuned") for s, a in enumerate((0.38, 0.40)))]
    found = dict(claims(records))
    assert (found["TAR with its open choices tuned on validation beats the best baseline (fgd)"]
            == "held (+3.0 AP, seed std 1.4)")
    assert [r.label for r in baseline_rows(records)] == ["student alone", "fitnet", "fgd", "tar, choices tuned on val"]


def test_every_baseline_gets_a_row_and_a_claim():
    records = [*(record("none", "student", seed=s, ap=0.30) for s in range(2)),
               *(record(method, group="baselines", ap=0.33) for method in ("pkd", "cwd")),
               *(record("tar", "full", seed=s, ap=a) for s, a in enumerate((0.34, 0.36)))]
    assert [r.label for r in baseline_rows(records)] == ["student alone", "pkd", "cwd", "tar"]
    found = dict(claims(records))
    assert found["TAR beats pkd"] == found["TAR beats cwd"] == "held (+2.0 AP, seed std 1.4)"
