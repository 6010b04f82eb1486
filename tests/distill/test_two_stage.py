import copy

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn
from torchvision.models.detection._utils import BoxCoder

from tardistill.distill.two_stage import check_two_stage_pair, class_deltas, two_stage_forward
from tardistill.errors import ConfigError


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_student_losses_match_torchvision_forward():
    student = tiny_faster_rcnn().train()
    teacher = tiny_faster_rcnn(fpn_channels=8, head_width=24, seed=1).eval()
    images, targets = tiny_batch()
    torch.manual_seed(0)
    reference = student(images, targets)
    torch.manual_seed(0)  # same sampler draws: the shared forward must be the student's own
    out = two_stage_forward(teacher, student, images, targets)
    assert out.det_losses.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(out.det_losses[name], value), name


def test_teacher_scores_exactly_the_sampled_rois():
    student = tiny_faster_rcnn().train()
    teacher = tiny_faster_rcnn(fpn_channels=8, head_width=24, seed=1).eval().requires_grad_(False)
    out = two_stage_forward(teacher, student, *tiny_batch())
    rois = out.proposals.shape[0]
    assert rois == out.labels.shape[0] == out.matched_gt_boxes.shape[0] <= 2 * 16
    assert out.student_logits.shape == out.teacher_logits.shape == (rois, 3)
    assert out.student_deltas.shape == out.teacher_deltas.shape == (rois, 12)
    assert not out.teacher_logits.requires_grad and out.student_logits.requires_grad
    assert list(out.teacher_features) == ["0", "1", "2", "3", "pool"]
    assert out.teacher_features["0"].shape[1] == 8 and out.student_features["0"].shape[1] == 16
    # GT boxes were appended as proposals, so every GT box is among the positives
    assert (out.labels > 0).sum() >= 3


def test_union_runs_teacher_rpn_and_student_sharing_does_not():
    student = tiny_faster_rcnn().train()
    teacher = tiny_faster_rcnn(seed=1).eval()
    rpn_calls, backbone_calls = _count_calls(teacher.rpn), _count_calls(teacher.backbone)
    two_stage_forward(teacher, student, *tiny_batch(), sharing="student")
    assert rpn_calls == [] and backbone_calls == [1]
    out = two_stage_forward(teacher, student, *tiny_batch(), sharing="union", teacher_head=False)
    assert rpn_calls == [1] and out.teacher_logits is None
    two_stage_forward(teacher, student, *tiny_batch(), teacher_features=False, teacher_head=False)
    assert backbone_calls == [1, 1]  # no KD term active: the teacher does not run at all
    with pytest.raises(ConfigError, match="student, union"):
        two_stage_forward(teacher, student, *tiny_batch(), sharing="teacher")


def test_class_deltas_picks_each_rows_class():
    regression = torch.arange(24.0).reshape(2, 12)  # 3 classes x 4 coordinates
    picked = class_deltas(regression, torch.tensor([2, 1]))
    assert picked.tolist() == [[8.0, 9.0, 10.0, 11.0], [16.0, 17.0, 18.0, 19.0]]


def test_incompatible_pairs_are_refused():
    student = tiny_faster_rcnn()
    with pytest.raises(ConfigError, match="teacher predicts 4 classes but student predicts 3"):
        check_two_stage_pair(tiny_faster_rcnn(num_classes=4), student)
    with pytest.raises(ConfigError, match="min_size: teacher"):
        check_two_stage_pair(tiny_faster_rcnn(min_size=96), student)
    teacher = copy.deepcopy(student)
    teacher.roi_heads.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="box coder weights differ"):
        check_two_stage_pair(teacher, student)


def test_degenerate_gt_box_is_refused():
    images, targets = tiny_batch()
    targets[0]["boxes"] = torch.tensor([[8.0, 8.0, 8.0, 40.0]])
    with pytest.raises(ValueError, match="positive width and height"):
        two_stage_forward(tiny_faster_rcnn(seed=1).eval(), tiny_faster_rcnn().train(), images, targets)
