import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from tardistill.distill.baseline_masks import fgd_batch_masks, fgd_masks, fgfi_mask, fgfi_masks


def grid_anchors(height: int, width: int, stride: float, size: float) -> torch.Tensor:
    """One square anchor per cell, centred at ((j + 0.5) s, (i + 0.5) s), row-major order."""
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) * stride, (torch.arange(width) + 0.5) * stride,
                            indexing="ij")
    centres = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 4)
    return centres + torch.tensor([-size / 2, -size / 2, size / 2, size / 2])


def test_fgfi_mask_one_level_known_cells():
    # 4x4, stride 8, anchor 16: cell (i, j) has anchor [8j - 4, 8i - 4, 8j + 12, 8i + 12].
    # GT (0, 0, 24, 16), area 384:
    #   (0,0): inter 12*12 = 144, union 384 + 256 - 144 = 496 -> 0.290
    #   (0,1): inter 16*12 = 192, union 448 -> 0.429 (the max); (0,2): 144 -> 0.290
    #   rows 1 the same as row 0; (0,3): inter 4*12 = 48 -> 0.081; (2,1): inter 16*4 = 64 -> 0.111
    # threshold 0.5 * 0.429 = 0.214, so exactly rows 0-1, columns 0-2.
    anchors = grid_anchors(4, 4, 8, 16)
    (mask,) = fgfi_mask([anchors], torch.tensor([[0.0, 0.0, 24.0, 16.0]]), level_shapes=[(4, 4)],
                        num_anchors_per_location=1)
    expected = torch.zeros(4, 4)
    expected[:2, :3] = 1.0
    assert torch.equal(mask, expected)


def test_fgfi_threshold_uses_the_best_anchor_of_all_levels():
    # GT (0, 0, 32, 32). Level 1 (2x2, stride 16, anchor 32): every anchor overlaps the GT by
    # 24 * 24 = 576 of union 1472 -> IoU 0.391, the max; threshold 0.196.
    # Level 0 (4x4, stride 8, anchor 16): anchors inside the GT (cells 1-2 x 1-2) have 256 / 1024 = 0.25;
    # (0, 1) has 192 / 1088 = 0.176, (0, 0) has 144 / 1136 = 0.127: both below 0.196 (a per-level
    # threshold, 0.125, would have taken them).
    anchors = [grid_anchors(4, 4, 8, 16), grid_anchors(2, 2, 16, 32)]
    fine, coarse = fgfi_mask(anchors, torch.tensor([[0.0, 0.0, 32.0, 32.0]]),
                             level_shapes=[(4, 4), (2, 2)], num_anchors_per_location=[1, 1])
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1.0
    assert torch.equal(fine, expected)
    assert torch.equal(coarse, torch.ones(2, 2))


def test_fgfi_mask_follows_torchvision_anchor_order():
    # AnchorGenerator with sizes (8, 32): 2 anchors per location, centred at (16 j, 16 i).
    # On a 1x3 grid, cell 2's small anchor is (28, -4, 36, 4); the GT (28, 0, 36, 4) has IoU
    # 32 / 64 = 0.5 with it and < 0.25 with every other anchor, so only cell 2 is set.
    generator = AnchorGenerator(sizes=((8, 32),), aspect_ratios=((1.0,),))
    images = ImageList(torch.zeros(1, 3, 16, 48), [(16, 48)])
    (anchors,) = generator(images, [torch.zeros(1, 1, 1, 3)])
    (mask,) = fgfi_mask([anchors], torch.tensor([[28.0, 0.0, 36.0, 4.0]]), level_shapes=[(1, 3)],
                        num_anchors_per_location=generator.num_anchors_per_location())
    assert mask.tolist() == [[0.0, 0.0, 1.0]]


def test_fgfi_masks_batch_and_no_gt():
    anchors = [grid_anchors(4, 4, 8, 16)]
    (masks,) = fgfi_masks(anchors, [torch.tensor([[0.0, 0.0, 24.0, 16.0]]), torch.zeros(0, 4)],
                          level_shapes=[(4, 4)], num_anchors_per_location=1)
    assert masks.shape == (2, 4, 4)
    assert masks[0].sum().item() == 6.0 and masks[1].sum().item() == 0.0
    with pytest.raises(ValueError, match="2 entries for 1 levels"):
        fgfi_mask(anchors, torch.zeros(0, 4), level_shapes=[(4, 4)], num_anchors_per_location=[1, 1])


def test_fgd_masks_scaled_foreground_and_background():
    # 4x4, stride 8. Box A (4, 4, 12, 20) -> cells (0.5, 0.5, 1.5, 2.5): columns floor 0 .. ceil 2,
    # rows 0 .. 3 -> 12 cells of 1/12. Box B (8, 16, 16, 24) -> (1, 2, 2, 3): columns 1..2, rows
    # 2..3 -> 4 cells of 1/4, which win the max where they overlap A. Column 3: background, 4 cells.
    boxes = torch.tensor([[4.0, 4.0, 12.0, 20.0], [8.0, 16.0, 16.0, 24.0]])
    fg, bg = fgd_masks(boxes, height=4, width=4, stride=8)
    expected_fg = torch.zeros(4, 4)
    expected_fg[:, :3] = 1 / 12
    expected_fg[2:, 1:3] = 1 / 4
    assert torch.allclose(fg, expected_fg)
    expected_bg = torch.zeros(4, 4)
    expected_bg[:, 3] = 1 / 4
    assert torch.allclose(bg, expected_bg)


def test_fgd_masks_count_cells_before_clipping_and_empty_image():
    # (24, 24, 32, 32) -> rows/columns 3 .. 4: 2 x 2 = 4 cells counted, only (3, 3) on the map.
    fg, bg = fgd_masks(torch.tensor([[24.0, 24.0, 32.0, 32.0]]), height=4, width=4, stride=8)
    assert fg[3, 3].item() == 0.25 and fg.sum().item() == 0.25
    assert bg[3, 3].item() == 0.0 and torch.allclose(bg[0, 0], torch.tensor(1 / 15))
    fg, bg = fgd_masks(torch.zeros(0, 4), height=4, width=4, stride=8)
    assert fg.sum().item() == 0.0 and torch.allclose(bg, torch.full((4, 4), 1 / 16))


def test_fgd_batch_masks_stacks_images():
    fg, bg = fgd_batch_masks([torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.zeros(0, 4)],
                             height=2, width=3, stride=8)
    assert fg.shape == bg.shape == (2, 2, 3)
    # (0, 0, 8, 8) -> floor 0 .. ceil 1 both ways: 4 cells of 1/4 (it spills into cell 1, as officially)
    assert torch.allclose(fg[0], torch.tensor([[0.25, 0.25, 0.0], [0.25, 0.25, 0.0]]))
    assert torch.allclose(bg[1], torch.full((2, 3), 1 / 6))
