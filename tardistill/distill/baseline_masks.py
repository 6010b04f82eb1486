"""Imitation masks of the baseline methods on FPN grids (METHOD.md, "Baselines"): FGFI and FGD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

# FGFI's psi: a cell imitates when one of its anchors reaches half the GT's best anchor IoU.
FGFI_PSI = 0.5


def fgfi_mask(anchors_per_level: Sequence[Tensor], gt_boxes: Tensor, *,
              level_shapes: Sequence[tuple[int, int]], num_anchors_per_location: int | Sequence[int],
              psi: float = FGFI_PSI) -> list[Tensor]:
    """FGFI's fine-grained imitation mask of one image on every FPN level (Wang et al., CVPR 2019).

    Per GT box k: threshold_k = psi * max IoU of k over the anchors of ALL levels. A cell is 1 when
    any of its anchors has IoU > threshold_k with some GT k (the union over GTs, as the official code
    adds the per-GT masks and then takes > 0).

    Args:
        anchors_per_level: L tensors [H_l * W_l * A_l, 4], xyxy input pixels, in torchvision's
            AnchorGenerator order (row, column, anchor): index = (i * W_l + j) * A_l + a.
        gt_boxes: Tensor[K, 4], xyxy in the same pixels.
        level_shapes: L pairs (H_l, W_l).
        num_anchors_per_location: A_l, one int for all levels or one per level.

    Returns:
        L tensors [H_l, W_l] of 0.0 / 1.0; all zeros when K == 0.
    """
    counts = _per_level(num_anchors_per_location, len(level_shapes))
    device = anchors_per_level[0].device
    if gt_boxes.numel() == 0:
        return [torch.zeros(h, w, device=device) for h, w in level_shapes]
    iou = box_iou(gt_boxes.detach().float(), torch.cat(list(anchors_per_level)).float())  # [K, sum]
    # The threshold uses the best anchor over all levels, so a GT imitates mostly on "its" level.
    threshold = psi * iou.amax(dim=1, keepdim=True)
    hit = (iou > threshold).any(dim=0)  # [sum]: anchor close enough to at least one GT
    sizes = [h * w * a for (h, w), a in zip(level_shapes, counts)]
    return [level_hit.reshape(h, w, a).any(dim=2).float()
            for level_hit, (h, w), a in zip(hit.split(sizes), level_shapes, counts)]


def fgfi_masks(anchors_per_level: Sequence[Tensor], boxes_per_image: Sequence[Tensor], *,
               level_shapes: Sequence[tuple[int, int]], num_anchors_per_location: int | Sequence[int],
               psi: float = FGFI_PSI) -> list[Tensor]:
    """`fgfi_mask` for each image of a batch (torchvision gives every image the same anchors).

    Returns:
        L tensors [N, H_l, W_l].
    """
    per_image = [fgfi_mask(anchors_per_level, boxes, level_shapes=level_shapes,
                           num_anchors_per_location=num_anchors_per_location, psi=psi)
                 for boxes in boxes_per_image]
    return [torch.stack(level) for level in zip(*per_image)]


def _per_level(num_anchors: int | Sequence[int], levels: int) -> list[int]:
    counts = [num_anchors] * levels if isinstance(num_anchors, int) else list(num_anchors)
    if len(counts) != levels:
        raise ValueError(f"num_anchors_per_location has {len(counts)} entries for {levels} levels")
    return counts


def fgd_masks(gt_boxes: Tensor, *, height: int, width: int, stride: float) -> tuple[Tensor, Tensor]:
    """FGD's scaled foreground and background masks of one image on one level (Yang et al., CVPR 2022).

    Follows the official code (yzd-v/FGD, FeatureLoss.forward): box k covers the cells from
    floor(x1 / s) to ceil(x2 / s) inclusive (rows likewise), so a box spills over into the cell past
    its right and bottom edges; its foreground value is 1 / (number of those cells), counted before
    clipping to the map; overlapping boxes take the max, so small boxes win. The background is 1 on
    cells outside every box, divided by the number of such cells. Official FGD maps boxes by
    W / image width; dividing by the stride instead is the same up to the padding of the batch.

    Args:
        gt_boxes: Tensor[K, 4], xyxy in input pixels.

    Returns:
        (fg, bg), each Tensor[height, width]; fg sums to about 1 per box, bg to 1 (0 if no cell is
        background); with K == 0, fg is 0 and bg is 1 / (height * width).
    """
    boxes = gt_boxes.detach().float() / stride
    device = boxes.device
    fg = torch.zeros(height, width, device=device)
    if boxes.numel():
        col_min, row_min = boxes[:, 0].floor(), boxes[:, 1].floor()
        col_max, row_max = boxes[:, 2].ceil(), boxes[:, 3].ceil()
        value = 1.0 / ((row_max - row_min + 1) * (col_max - col_min + 1))  # [K]
        rows = torch.arange(height, device=device, dtype=torch.float32)
        cols = torch.arange(width, device=device, dtype=torch.float32)
        in_rows = (rows[None] >= row_min[:, None]) & (rows[None] <= row_max[:, None])  # [K, H]
        in_cols = (cols[None] >= col_min[:, None]) & (cols[None] <= col_max[:, None])  # [K, W]
        inside = in_rows[:, :, None] & in_cols[:, None, :]  # [K, H, W]
        fg = (inside * value[:, None, None]).amax(dim=0)
    bg = (fg == 0).float()
    return fg, bg / bg.sum().clamp(min=1.0)


def fgd_batch_masks(boxes_per_image: Sequence[Tensor], *, height: int, width: int,
                    stride: float) -> tuple[Tensor, Tensor]:
    """`fgd_masks` for each image of a batch: (fg, bg), each Tensor[N, height, width]."""
    pairs = [fgd_masks(b, height=height, width=width, stride=stride) for b in boxes_per_image]
    return torch.stack([fg for fg, _ in pairs]), torch.stack([bg for _, bg in pairs])
