"""The parity comparison: ties in NMS and detections at the cut pass, real differences fail; hand-built cases."""

import pytest
import torch

from tardistill.deploy.same_detections import compare_detections, nms_disabled
from tests.distill.tiny_detectors import tiny_faster_rcnn

# Three boxes of label 1. NMS at IoU 0.5: A and B overlap (0.82), B and C overlap (0.54), A and C
# do not (0.43). With A first, NMS keeps A and C; with B first, it keeps B alone.
A, B, C = [0.0, 0, 10, 10], [1.0, 0, 11, 10], [4.0, 0, 14, 10]
BEFORE_NMS = (torch.tensor([A, B, C]), torch.tensor([0.9, 0.9 + 1e-8, 0.8]), torch.tensor([1, 1, 1]))


def detections(*rows):
    """(boxes, scores, labels) from (box, score, label) rows."""
    boxes, scores, labels = zip(*rows) if rows else ((), (), ())
    return torch.tensor(boxes).reshape(-1, 4), torch.tensor(scores), torch.tensor(labels, dtype=torch.long)


def compare(reference, candidate, before_nms=BEFORE_NMS, **options):
    report = compare_detections(reference, candidate, before_nms=before_nms, box_tolerance=0.01,
                                **{"score_threshold": 0.5, **options})
    report["passed"] = report["unmatched"] == report["missing"] == report["overlapping"] == 0
    return report


REFERENCE = detections((A, 0.9, 1), (C, 0.8, 1))


def test_the_same_detections_in_another_order_pass():
    report = compare(REFERENCE, detections((C, 0.8, 1), (A, 0.9 + 1e-6, 1)))
    assert report["passed"] and report["ties"] == 0 and report["count_candidate"] == 2
    assert report["max_box_diff"] == 0 and report["max_score_diff"] == pytest.approx(1e-6, abs=1e-7)


def test_an_nms_tie_and_what_it_suppresses_pass():
    # A and B tie: the export kept B, which then also suppressed C
    report = compare(REFERENCE, detections((B, 0.9, 1)))
    assert report["passed"] and report["ties"] == 1 and report["max_box_diff"] == 0


def test_a_box_computed_wrong_fails_with_its_difference():
    report = compare(REFERENCE, detections((A[:3] + [10.5], 0.9, 1), (C, 0.8, 1)))
    assert not report["passed"] and report["unmatched"] == 1 and report["max_box_diff"] == pytest.approx(0.5)
    assert not compare(REFERENCE, detections((A, 0.9, 2), (C, 0.8, 1)))["passed"]  # another label
    assert compare(REFERENCE, detections((A, 0.95, 1), (C, 0.8, 1)))["max_score_diff"] == pytest.approx(0.05)


def test_a_lost_detection_and_an_nms_that_keeps_too_much_fail():
    assert compare(REFERENCE, detections((A, 0.9, 1)))["missing"] == 1  # C: nothing exported suppresses it
    # B is a real candidate, but NMS never keeps two boxes that overlap by more than its IoU (A-B, B-C)
    assert compare(REFERENCE, detections((A, 0.9, 1), (B, 0.9, 1), (C, 0.8, 1)))["overlapping"] == 2


def test_detections_at_the_cut_need_no_counterpart():
    # C scores a hair above the threshold in PyTorch: rounding may put it below in the export
    report = compare(REFERENCE, detections((A, 0.9, 1)), score_threshold=0.8 - 1e-7)
    assert report["passed"] and report["near_cut"] == 1
    # a full list (max_detections) cuts at its lowest score, and ties there may swap
    full = compare(REFERENCE, detections((A, 0.9, 1), ([20.0, 20, 30, 30], 0.8, 1)), max_detections=2,
                   before_nms=detections((A, 0.9, 1), (C, 0.8, 1), ([20.0, 20, 30, 30], 0.8, 1)))
    assert full["passed"] and full["near_cut"] == 1


def test_nms_is_disabled_only_within_the_block():
    detector = tiny_faster_rcnn().eval()
    with nms_disabled(detector):
        assert detector.roi_heads.nms_thresh == 1.0 and detector.roi_heads.detections_per_img > 10**6
    assert (detector.roi_heads.nms_thresh, detector.roi_heads.detections_per_img) == (0.5, 100)
