"""Whether an exported model's detections are ones the PyTorch model could have output, up to rounding.

Rounding noise (about 1e-7 in a score) decides two things, so an exact comparison of two runs'
outputs fails on models that are fine:
- **Ties in NMS.** Of two same-label boxes that overlap by more than the NMS IoU and score within
  the noise of each other, NMS keeps one, and rounding decides which. The box kept then
  suppresses other boxes, so one tie can change several detections further down. An untrained
  or briefly trained model scores almost every box alike, and ties are everywhere.
- **The cut.** A detection scoring within the noise of the score threshold, or of the lowest score
  kept when a list is full (detections_per_image), may fall on either side of it.

So the exported detections are checked against the PyTorch model's candidates before NMS (its
detections with NMS and the count cut disabled) rather than against its final list:
1. every exported detection is a candidate: the same label, boxes within the box tolerance and
   scores within SCORE_TOLERANCE (else "unmatched", and the differences show in the maxima);
2. every candidate scoring clear of the cut is exported, or could have been suppressed: an exported
   box of its label overlaps it by more than the NMS IoU and scores at least as high, within
   SCORE_TOLERANCE (else "missing");
3. no two exported boxes of one label overlap by more than the NMS IoU, as NMS never keeps both
   (else "overlapping").
Where no scores tie, exactly one list passes: PyTorch's own. So a box computed wrong, a detection
lost, or an NMS that keeps too much or too little still fails.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

SCORE_TOLERANCE = 1e-4
Detections = tuple[Tensor, Tensor, Tensor]  # boxes [N, 4], scores [N], labels [N]


@contextmanager
def nms_disabled(detector: nn.Module):
    """Within the block, `detector` outputs every box above its score threshold: no NMS, no count cut."""
    heads = getattr(detector, "roi_heads", detector)  # Faster R-CNN's box NMS, or RetinaNet's
    saved = heads.nms_thresh, heads.detections_per_img
    heads.nms_thresh, heads.detections_per_img = 1.0, 1 << 30  # no IoU exceeds 1: nothing is suppressed
    try:
        yield
    finally:
        heads.nms_thresh, heads.detections_per_img = saved


def compare_detections(reference: Detections, candidate: Detections, *, before_nms: Detections,
                       score_threshold: float, box_tolerance: float, nms_iou: float = 0.5,
                       max_detections: int | None = None) -> dict:
    """Check `candidate` (the export's detections) against the reference model's, as the module says.

    Args:
        reference: the PyTorch model's detections; before_nms: its candidates before NMS.
        score_threshold: detections scoring below it are not compared.

    Returns:
        count_reference, count_candidate (detections clear of the cut), near_cut (reference
        detections within SCORE_TOLERANCE of it), ties (exported detections that PyTorch's NMS did
        not keep, but could have), unmatched, missing, overlapping, max_box_diff (px), max_score_diff.
    """
    floor = _score_cut(reference, candidate, score_threshold=score_threshold, max_detections=max_detections)
    exported = tuple(t[candidate[1] >= floor + SCORE_TOLERANCE] for t in candidate)
    box_diffs, score_diffs = _differences_to_candidates(exported, before_nms)
    is_candidate = (box_diffs <= box_tolerance) & (score_diffs <= SCORE_TOLERANCE)
    kept_by_reference = _nearest(exported, reference)[0] <= box_tolerance
    must_explain = tuple(t[before_nms[1] >= floor + SCORE_TOLERANCE] for t in before_nms)
    return {"count_reference": int((reference[1] >= floor + SCORE_TOLERANCE).sum()),
            "count_candidate": len(exported[1]),
            "near_cut": int(((reference[1] >= floor) & (reference[1] < floor + SCORE_TOLERANCE)).sum()),
            "ties": int((is_candidate & ~kept_by_reference).sum()), "unmatched": int((~is_candidate).sum()),
            "missing": _missing(must_explain, candidate, box_tolerance=box_tolerance, nms_iou=nms_iou),
            "overlapping": _overlapping_pairs(candidate, nms_iou=nms_iou),
            "max_box_diff": float(box_diffs.max()) if len(box_diffs) else 0.0,
            "max_score_diff": float(score_diffs.max()) if len(score_diffs) else 0.0}


def _score_cut(reference: Detections, candidate: Detections, *, score_threshold: float,
               max_detections: int | None) -> float:
    """The lowest score either list must hold: the threshold, or the lowest kept by a full list."""
    cut = score_threshold
    for scores in (reference[1], candidate[1]):
        if max_detections is not None and len(scores) >= max_detections:
            cut = max(cut, float(scores.min()))
    return cut


def _nearest(detections: Detections, pool: Detections) -> tuple[Tensor, Tensor]:
    """For each detection: the corner difference (px) to the closest same-label box of `pool`
    (inf where it has none), and that box's index."""
    boxes, _, labels = detections
    if not len(boxes) or not len(pool[0]):
        return torch.full((len(boxes),), float("inf")), torch.zeros(len(boxes), dtype=torch.long)
    distance = (boxes[:, None, :] - pool[0][None, :, :]).abs().amax(dim=-1)
    distance[labels[:, None] != pool[2][None, :]] = float("inf")
    return distance.min(dim=1)


def _differences_to_candidates(exported: Detections, before_nms: Detections) -> tuple[Tensor, Tensor]:
    """Box and score differences of each exported detection to its closest same-label candidate (inf: none)."""
    box_diffs, index = _nearest(exported, before_nms)
    found = torch.isfinite(box_diffs)
    score_diffs = torch.full_like(box_diffs, float("inf"))
    score_diffs[found] = (exported[1][found] - before_nms[1][index[found]]).abs()
    return box_diffs, score_diffs


def _missing(candidates: Detections, exported: Detections, *, box_tolerance: float, nms_iou: float) -> int:
    """Candidates that are neither exported nor suppressible by an exported box (see the module docstring)."""
    if not len(candidates[0]):
        return 0
    if not len(exported[0]):
        return len(candidates[0])
    same_label = candidates[2][:, None] == exported[2][None, :]
    kept = same_label & ((candidates[0][:, None, :] - exported[0][None, :, :]).abs().amax(dim=-1) <= box_tolerance)
    suppressed = (same_label & (box_iou(candidates[0], exported[0]) > nms_iou)
                  & (exported[1][None, :] >= candidates[1][:, None] - SCORE_TOLERANCE))
    return int((~(kept | suppressed).any(dim=1)).sum())


def _overlapping_pairs(detections: Detections, *, nms_iou: float) -> int:
    """Pairs of same-label boxes that overlap by more than the NMS IoU."""
    boxes, _, labels = detections
    overlap = (box_iou(boxes, boxes) > nms_iou) & (labels[:, None] == labels[None, :])
    return int(torch.triu(overlap, diagonal=1).sum())
