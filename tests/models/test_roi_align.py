"""The fast-backward RoIAlign: torchvision's values and gradient, used only where it pays."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from tardistill.models.build import build_detector
from tardistill.models.roi_align import FastBackwardRoIAlign, roi_align_matrix_backward


def _rois(count, size, images, seed=0):
    """Random boxes, some reaching past the map (proposals are clipped, a user's RoIs may not be)."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * size * 1.1 - 2
    extent = torch.rand(count, 2, generator=generator) * size * 0.8
    extent[:3] = 0.2  # thinner than one pixel: torchvision makes them one pixel long
    index = torch.randint(0, images, (count, 1), generator=generator).float()
    return torch.cat([index, corner, corner + extent], dim=1)


@pytest.mark.parametrize("height,width,scale,ratio", [(16, 16, 0.25, 2), (5, 9, 0.5, 3), (1, 2, 0.125, 1)])
def test_values_and_gradient_equal_torchvisions(height, width, scale, ratio):
    features = torch.randn(3, 4, height, width, dtype=torch.float64, requires_grad=True)
    rois = _rois(40, max(height, width) / scale, images=3).double()
    weights = torch.randn(40, 4, 7, 7, dtype=torch.float64)
    expected = roi_align(features, rois, (7, 7), scale, ratio)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), features)
    pooled = roi_align_matrix_backward(features, rois, (7, 7), scale, ratio)
    (grad,) = torch.autograd.grad((pooled * weights).sum(), features)
    assert torch.equal(pooled, expected)  # the forward is torchvision's kernel
    torch.testing.assert_close(grad, expected_grad)


def test_no_rois_and_an_image_without_rois_get_a_zero_gradient():
    features = torch.randn(2, 3, 8, 8, requires_grad=True)
    rois = torch.tensor([[1.0, 0.0, 0.0, 10.0, 12.0]])
    roi_align_matrix_backward(features, rois, (2, 2), 0.5, 2).sum().backward()
    assert torch.count_nonzero(features.grad[0]) == 0 and torch.count_nonzero(features.grad[1]) > 0
    empty = roi_align_matrix_backward(features, rois[:0], (2, 2), 0.5, 2)
    assert empty.shape == (0, 3, 2, 2)


def test_adaptive_sampling_is_refused():
    with pytest.raises(ValueError, match="sampling_ratio > 0"):
        roi_align_matrix_backward(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2, 2), 1.0, 0)


def test_pooler_equals_torchvisions_across_levels_in_training_and_inference():
    names = ["0", "1", "2"]
    features = {name: torch.randn(2, 4, 32 // 2**i, 32 // 2**i, requires_grad=True) for i, name in enumerate(names)}
    boxes = [torch.tensor([[0.0, 0.0, 120.0, 100.0], [4.0, 8.0, 20.0, 30.0]]),
             torch.tensor([[10.0, 10.0, 60.0, 90.0], [1.0, 2.0, 6.0, 7.0], [30.0, 0.0, 128.0, 128.0]])]
    reference = MultiScaleRoIAlign(names, 7, 2)
    fast = FastBackwardRoIAlign.replacing(reference)
    expected = reference(features, boxes, [(128, 128)] * 2)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(features.values()))
    pooled = fast(features, boxes, [(128, 128)] * 2)
    grads = torch.autograd.grad(pooled.square().sum(), list(features.values()))
    assert torch.equal(pooled, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    with torch.no_grad():
        assert torch.equal(fast(features, boxes, [(128, 128)] * 2), expected)


def test_faster_rcnn_gets_the_pooler_and_keeps_its_state_dict_keys():
    model = build_detector("faster_rcnn", "resnet18", num_classes=2, width_multiplier=0.25, fpn_channels=16,
                           head_width=32)
    assert isinstance(model.roi_heads.box_roi_pool, FastBackwardRoIAlign)
    assert not any("box_roi_pool" in key for key in model.state_dict())
