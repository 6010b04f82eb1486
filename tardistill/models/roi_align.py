"""RoIAlign with a fast backward pass on CPU, for training Faster R-CNN there.

Why: torchvision's CPU `roi_align` backward kernel scatters every bilinear sample into the
gradient one at a time. Profiling a quarter-width ResNet-18-FPN Faster R-CNN training step on
CPU-2 (batch 8, 128 px, one thread) put 44 % of the step in it. Written as matrix products (see
`_RoIAlignMatrixBackward`), the same gradient took 0.06 s instead of 0.15 s for 1024 RoIs on a
64-channel 32 x 32 map (one thread).

The forward stays torchvision's kernel, so pooled values, detections and exports are unchanged;
`FastBackwardRoIAlign` only swaps in the new backward where autograd will run one on the CPU.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, roi_align
# torchvision's own pooler helpers (private; the version is pinned in constraints.txt, and
# tests/models/test_roi_align.py compares this pooler with MultiScaleRoIAlign, so a change there shows).
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _multiscale_roi_align, _setup_scales


class _RoIAlignMatrixBackward(torch.autograd.Function):
    """torchvision's roi_align forward; the gradient for the features as matrix products.

    RoIAlign on an axis-aligned box is separable: each output bin averages sampling_ratio x
    sampling_ratio bilinear samples on a regular grid, and a sample's bilinear weight is
    (weight along y) x (weight along x). So out[k] = A_y[k] @ feature[c] @ A_x[k]^T, with A_y
    [out_h, H] and A_x [out_w, W] built from the box alone, and the features' gradient is
    sum_k A_y[k]^T @ grad_out[k] @ A_x[k]: a batched product and one matrix product per image.
    """

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.settings = (features.shape, output_size, spatial_scale, sampling_ratio)
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (rois,) = ctx.saved_tensors
        (images, channels, height, width), (out_h, out_w), spatial_scale, sampling_ratio = ctx.settings
        boxes = rois[:, 1:] * spatial_scale
        along_y = _axis_weights(boxes[:, 1], boxes[:, 3], out_h, sampling_ratio, height).to(grad_out.dtype)
        along_x = _axis_weights(boxes[:, 0], boxes[:, 2], out_w, sampling_ratio, width).to(grad_out.dtype)
        grad_features = grad_out.new_zeros((images, height, channels * width))
        image_of_roi = rois[:, 0].to(torch.long)
        for image in image_of_roi.unique().tolist():
            picked = torch.where(image_of_roi == image)[0]
            count = len(picked)
            # [k, out_h * C, out_w] @ [k, out_w, W] -> [k * out_h, C * W]
            per_row = torch.bmm(grad_out[picked].transpose(1, 2).reshape(count, out_h * channels, out_w),
                                along_x[picked]).reshape(count * out_h, channels * width)
            grad_features[image] = along_y[picked].reshape(count * out_h, height).T @ per_row
        grad_features = grad_features.reshape(images, height, channels, width).transpose(1, 2)
        return grad_features, None, None, None, None


def roi_align_matrix_backward(features: Tensor, rois: Tensor, output_size: tuple[int, int],
                              spatial_scale: float, sampling_ratio: int) -> Tensor:
    """torchvision.ops.roi_align (aligned=False, sampling_ratio > 0) with a fast CPU backward.

    features [N, C, H, W]; rois [K, 5] = (image index, x1, y1, x2, y2) in image pixels. The
    forward is torchvision's own; the boxes get no gradient, as in torchvision.
    """
    if sampling_ratio <= 0:
        raise ValueError("roi_align_matrix_backward needs a fixed sampling_ratio > 0 (torchvision's "
                         "adaptive mode picks the sample count per RoI)")
    return _RoIAlignMatrixBackward.apply(features, rois.detach(), tuple(output_size), float(spatial_scale),
                                         int(sampling_ratio))


def _axis_weights(start: Tensor, end: Tensor, bins: int, sampling_ratio: int, size: int) -> Tensor:
    """[K, bins, size]: how much each feature row (or column) weighs in each output bin of each box.

    torchvision's rules (aligned=False): a box is at least 1 pixel long; a sample more than one pixel
    outside the map is 0; one between -1 and 0 takes row 0, one past the last row takes the last row.
    """
    length = (end - start).clamp(min=1.0)
    steps = torch.arange(bins * sampling_ratio, dtype=start.dtype, device=start.device) + 0.5
    position = start[:, None] + steps * (length / (bins * sampling_ratio))[:, None]  # [K, bins * s]
    inside = ((position >= -1.0) & (position <= size)).to(start.dtype)
    position = position.clamp(min=0.0)
    low = position.floor().to(torch.long).clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    fraction = torch.where(low >= size - 1, torch.zeros_like(position), position - low)
    weights = torch.zeros(*position.shape, size, dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, low[..., None], ((1 - fraction) * inside)[..., None])
    weights.scatter_add_(2, high[..., None], (fraction * inside)[..., None])
    return weights.reshape(len(start), bins, sampling_ratio, size).mean(dim=2)


class FastBackwardRoIAlign(MultiScaleRoIAlign):
    """MultiScaleRoIAlign whose CPU training forward uses `roi_align_matrix_backward`."""

    @classmethod
    def replacing(cls, pooler: MultiScaleRoIAlign) -> FastBackwardRoIAlign:
        """The same pooler: feature maps, output size, sampling ratio, level mapping."""
        return cls(pooler.featmap_names, pooler.output_size, pooler.sampling_ratio,
                   canonical_scale=pooler.canonical_scale, canonical_level=pooler.canonical_level)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        if not torch.jit.is_scripting() and _backward_on_cpu(features):
            return self._pool_for_cpu_backward(features, boxes)
        return _multiscale_roi_align(features, boxes, self.output_size, self.sampling_ratio, self.scales,
                                     self.map_levels)

    @torch.jit.unused
    def _pool_for_cpu_backward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """torchvision's level loop (one level per RoI, by its size) around the fast-backward op."""
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes) if len(features) > 1 else rois.new_zeros(len(rois), dtype=torch.long)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            picked = torch.where(levels == level)[0]
            pooled.append(roi_align_matrix_backward(feature, rois[picked], self.output_size, scale,
                                                    self.sampling_ratio))
            order.append(picked)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]


def _backward_on_cpu(features: list[Tensor]) -> bool:
    """True when autograd will differentiate this CPU forward: the case torchvision's kernel is slow in."""
    return (torch.is_grad_enabled() and not torchvision._is_tracing() and features[0].device.type == "cpu"
            and features[0].requires_grad)


def use_fast_backward_roi_align(model: nn.Module) -> nn.Module:
    """Give a Faster R-CNN the FastBackwardRoIAlign box pooler (RetinaNet has none); returns the model.

    The pooler holds no weights, so checkpoints and state dicts are unchanged.
    """
    pooler = getattr(getattr(model, "roi_heads", None), "box_roi_pool", None)
    if type(pooler) is MultiScaleRoIAlign and pooler.sampling_ratio > 0:
        model.roi_heads.box_roi_pool = FastBackwardRoIAlign.replacing(pooler)
    return model
