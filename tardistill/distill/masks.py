"""Gaussian foreground masks on FPN grids (METHOD.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_mask(boxes: Tensor, *, height: int, width: int, stride: float, beta: float = 0.5,
                  truncate: bool = True) -> Tensor:
    """Max over GT boxes of a box-shaped Gaussian, sampled at the cell centres of one FPN level.

    Cell (i, j) sits at ((j + 0.5) * stride, (i + 0.5) * stride) in input-image pixels. With
    `truncate`, each Gaussian is 0 at cell centres outside its own box (edges count as inside).

    Args:
        boxes: Tensor[K, 4], xyxy in the pixels of the (resized) network input.
        beta: sigma_x = beta * box width, sigma_y = beta * box height.

    Returns:
        Tensor[height, width] in [0, 1]; all zeros when K == 0.
    """
    boxes = boxes.detach().float()
    xs = (torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    ys = (torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    if boxes.numel() == 0:
        return torch.zeros(height, width, device=boxes.device)
    x1, y1, x2, y2 = (boxes[:, k, None] for k in range(4))  # each [K, 1]
    # A floor on sigma keeps degenerate (zero-size) boxes from producing 0/0 = nan.
    sigma_x = (beta * (x2 - x1)).clamp(min=1e-6)
    sigma_y = (beta * (y2 - y1)).clamp(min=1e-6)
    gx = ((xs[None] - (x1 + x2) / 2) ** 2) / (2 * sigma_x**2)  # [K, W]
    gy = ((ys[None] - (y1 + y2) / 2) ** 2) / (2 * sigma_y**2)  # [K, H]
    g = torch.exp(-(gy[:, :, None] + gx[:, None, :]))  # [K, H, W]
    if truncate:
        inside_x = (xs[None] >= x1) & (xs[None] <= x2)
        inside_y = (ys[None] >= y1) & (ys[None] <= y2)
        g = g * (inside_y[:, :, None] & inside_x[:, None, :])
    return g.amax(dim=0)


def gaussian_masks(boxes_per_image: list[Tensor], *, height: int, width: int, stride: float,
                   beta: float = 0.5, truncate: bool = True) -> Tensor:
    """`gaussian_mask` for each image of a batch on one FPN level.

    Args:
        boxes_per_image: N tensors of shape [K_n, 4].

    Returns:
        Tensor[N, height, width].
    """
    return torch.stack([
        gaussian_mask(b, height=height, width=width, stride=stride, beta=beta, truncate=truncate)
        for b in boxes_per_image
    ])
