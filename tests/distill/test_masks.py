import math

import torch

from tardistill.distill import gaussian_mask
from tardistill.distill.masks import gaussian_masks

# Box (0, 0, 32, 32), beta 0.5: centre (16, 16), sigma 16 in x and y, so 2 sigma^2 = 512.
BOX = torch.tensor([[0.0, 0.0, 32.0, 32.0]])


def test_mask_values_at_known_cells():
    mask = gaussian_mask(BOX, height=6, width=6, stride=8)
    assert mask.shape == (6, 6)
    # cell (1, 1) sits at (12, 12): exp(-(16 + 16) / 512) = exp(-0.0625) = 0.939413
    assert math.isclose(mask[1, 1].item(), 0.939413, rel_tol=1e-5)
    # cell (0, 0) sits at (4, 4): exp(-(144 + 144) / 512) = exp(-0.5625) = 0.569783
    assert math.isclose(mask[0, 0].item(), 0.569783, rel_tol=1e-5)
    # cell (0, 2) sits at (20, 4): exp(-(16 + 144) / 512) = exp(-0.3125) = 0.731616
    assert math.isclose(mask[0, 2].item(), 0.731616, rel_tol=1e-5)
    # cell (4, 4) sits at (36, 36), outside the box: truncated to 0
    assert mask[4, 4].item() == 0.0
    assert mask[:, 4:].abs().sum().item() == 0.0


def test_mask_without_truncation_and_other_beta():
    mask = gaussian_mask(BOX, height=6, width=6, stride=8, truncate=False)
    # (36, 36): exp(-(400 + 400) / 512) = exp(-1.5625) = 0.209611
    assert math.isclose(mask[4, 4].item(), 0.209611, rel_tol=1e-5)
    # beta 0.25: sigma 8, 2 sigma^2 = 128; (12, 12): exp(-32 / 128) = exp(-0.25) = 0.778801
    narrow = gaussian_mask(BOX, height=6, width=6, stride=8, beta=0.25)
    assert math.isclose(narrow[1, 1].item(), 0.778801, rel_tol=1e-5)


def test_mask_is_max_over_boxes_and_zero_without_boxes():
    second = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # centre (8, 8), 2 sigma^2 = 128
    mask = gaussian_mask(torch.cat([BOX, second]), height=6, width=6, stride=8)
    # cell (0, 0) at (4, 4): max(exp(-0.5625), exp(-(16 + 16) / 128) = exp(-0.25) = 0.778801)
    assert math.isclose(mask[0, 0].item(), 0.778801, rel_tol=1e-5)
    assert math.isclose(mask[1, 1].item(), 0.939413, rel_tol=1e-5)  # the big box wins here
    assert torch.equal(gaussian_mask(torch.zeros(0, 4), height=3, width=5, stride=8),
                       torch.zeros(3, 5))


def test_batched_masks_stack_per_image():
    masks = gaussian_masks([BOX, torch.zeros(0, 4)], height=6, width=6, stride=8)
    assert masks.shape == (2, 6, 6)
    assert torch.equal(masks[0], gaussian_mask(BOX, height=6, width=6, stride=8))
    assert masks[1].sum().item() == 0.0
