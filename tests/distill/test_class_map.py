"""distill.class_map: the teacher's class outputs gathered onto the student's classes, checked by hand."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from tardistill.config import load_config
from tardistill.data.voc import VOC_CLASSES
from tardistill.distill.class_map import ClassMap, resolve_class_map
from tardistill.distill.distiller import Distiller
from tardistill.distill.one_stage import one_stage_forward
from tardistill.distill.two_stage import two_stage_forward
from tardistill.errors import ConfigError
from tardistill.models.zoo import coco_classes
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet

TEACHER = ["cat", "dog", "bird"]  # labels 1, 2, 3
# student label 1 (kitten) <- teacher 3 (bird), student label 2 (puppy) <- teacher 1 (cat)
MAP = ClassMap((0, 3, 1), num_teacher_classes=4)


def test_softmax_gathering_folds_unmapped_classes_into_the_background():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])  # background, cat, dog, bird
    gathered = MAP.softmax_logits(logits)
    assert gathered[0].tolist() == pytest.approx([math.log(1 + math.e**2), 3.0, 1.0])
    p = logits.softmax(dim=1)[0].tolist()
    # the teacher's own probabilities: "dog" is none of the student's classes, so it is background
    assert gathered.softmax(dim=1)[0].tolist() == pytest.approx([p[0] + p[2], p[3], p[1]])


def test_sigmoid_gathering_picks_columns():
    logits = torch.tensor([[[10.0, 11.0, 12.0, 13.0]]])  # [N, anchors, T]
    assert MAP.sigmoid_logits(logits).tolist() == [[[10.0, 13.0, 11.0]]]


def test_class_deltas_move_with_their_class():
    deltas = torch.arange(16.0).reshape(1, 16)  # 4 classes x (dx, dy, dw, dh)
    assert MAP.class_deltas(deltas).tolist() == [[0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7]]


def test_map_by_name_label_same_name_and_file(tmp_path):
    assert resolve_class_map({"kitten": "bird", "puppy": 1}, TEACHER, ["kitten", "puppy"], teacher="t") == MAP
    # a student class left out of the map is matched to the teacher class of the same name
    assert resolve_class_map({"kitten": 3}, TEACHER, ["kitten", "cat"], teacher="t") == MAP
    path = tmp_path / "map.yaml"
    path.write_text("kitten: bird\npuppy: cat\n")
    assert resolve_class_map(str(path), TEACHER, ["kitten", "puppy"], teacher="t") == MAP
    assert resolve_class_map(None, TEACHER, TEACHER, teacher="t") is None  # one class list: no map


def test_without_a_map_classes_are_matched_by_name():
    assert resolve_class_map(None, TEACHER, ["bird", "cat"], teacher="t") == MAP
    assert resolve_class_map({}, TEACHER, ["bird", "cat"], teacher="t") == MAP
    # the COCO teacher of a COCO-format subset: its names are COCO's, their labels the category ids
    coco_subset = resolve_class_map(None, coco_classes(), ["car", "person"], teacher="coco.pth")
    assert coco_subset == ClassMap((0, 3, 1), num_teacher_classes=91)


def test_classes_missing_by_name_are_named_with_the_yaml_to_write():
    with pytest.raises(ConfigError) as error:
        resolve_class_map(None, coco_classes(), ["person", "aeroplane", "sofa"], teacher="coco.pth")
    first, *block = str(error.value).splitlines()
    assert first.startswith("distill.class_map: the teacher (coco.pth) has no class named aeroplane, sofa ")
    assert "label (1..90)" in first
    # the block is the config section to paste: the closest teacher name where one is close, else null
    assert yaml.safe_load("\n".join(block)) == {"distill": {"class_map": {"aeroplane": "airplane", "sofa": None}}}
    with pytest.raises(ConfigError, match="sofa: expected a teacher class name or label, got None"):
        resolve_class_map({"aeroplane": "airplane", "sofa": None}, coco_classes(), ["aeroplane", "sofa"],
                          teacher="coco.pth")


def test_teacher_detections_are_relabelled_onto_the_student_classes():
    detections = {"boxes": torch.arange(12.0).reshape(3, 4), "scores": torch.tensor([0.9, 0.8, 0.7]),
                  "labels": torch.tensor([2, 3, 1])}  # dog, bird, cat
    mapped = MAP.student_detections(detections)
    # dog is no student class: dropped; bird is student label 1 (kitten), cat label 2 (puppy)
    assert mapped["labels"].tolist() == [1, 2] and mapped["scores"].tolist() == pytest.approx([0.8, 0.7])
    assert mapped["boxes"].tolist() == detections["boxes"][1:].tolist()


@pytest.mark.parametrize("mapping, student, match", [
    ({"lion": "cat"}, ["kitten"], "lion not among the student's classes"),
    ({"kitten": 4}, ["kitten"], "teacher label 4 is outside 1..3"),
    ({"kitten": 0}, ["kitten"], r"outside 1..3 \(0 is the background\)"),
    ({"kitten": "cow"}, ["kitten"], "'cow' is not a teacher class"),
    ({"kitten": [1]}, ["kitten"], "expected a teacher class name or label"),
    ({"puppy": "dog"}, ["kitten", "puppy"], "has no class named kitten"),
    ({"kitten": "cat", "puppy": 1}, ["kitten", "puppy"], r"several student classes map to teacher class cat \(label 1\)"),
])
def test_bad_maps_are_refused(mapping, student, match):
    with pytest.raises(ConfigError, match=match):
        resolve_class_map(mapping, TEACHER, student, teacher="t")


def test_ambiguous_teacher_name_needs_a_label():
    with pytest.raises(ConfigError, match="'N/A' names several teacher classes; use a label"):
        resolve_class_map({"kitten": "N/A"}, ["N/A", "cat", "N/A"], ["kitten"], teacher="t")
    with pytest.raises(ConfigError, match="has no class named N/A"):  # by name, it is no one class either
        resolve_class_map(None, ["N/A", "cat", "N/A"], ["N/A"], teacher="t")


def test_two_stage_teacher_outputs_are_gathered_onto_the_student_classes():
    teacher, student = tiny_faster_rcnn(num_classes=4, seed=1).eval(), tiny_faster_rcnn(num_classes=3).train()
    with pytest.raises(ConfigError, match="teacher predicts 4 classes but student predicts 3"):
        Distiller(teacher, student, fpn_weight=0.0)
    torch.manual_seed(0)
    plain = two_stage_forward(teacher, student, *tiny_batch())
    torch.manual_seed(0)  # the same RoI sample
    mapped = two_stage_forward(teacher, student, *tiny_batch(), class_map=MAP)
    assert torch.allclose(mapped.teacher_logits, MAP.softmax_logits(plain.teacher_logits))
    assert torch.equal(mapped.teacher_deltas, MAP.class_deltas(plain.teacher_deltas))
    losses = Distiller(teacher, student, fpn_weight=0.0, class_map=MAP)(*tiny_batch())
    assert torch.isfinite(losses["kd/cls"]) and torch.isfinite(losses["kd/reg"])


def test_one_stage_teacher_logits_are_gathered_onto_the_student_classes():
    teacher, student = tiny_retinanet(num_classes=4, seed=1).eval(), tiny_retinanet(num_classes=3).train()
    # a student with the teacher's classes has the same anchors, so the same rows: the ungathered logits
    plain = one_stage_forward(teacher, tiny_retinanet(num_classes=4).train(), *tiny_batch(), teacher_features=False)
    mapped = one_stage_forward(teacher, student, *tiny_batch(), teacher_features=False, class_map=MAP)
    assert torch.equal(mapped.teacher_logits, MAP.sigmoid_logits(plain.teacher_logits))
    with pytest.raises(ConfigError, match="maps 3 student outputs onto 4 teacher outputs, but the student "
                                          "predicts 3 and the teacher 5"):
        Distiller(tiny_retinanet(num_classes=5), student, fpn_weight=0.0, class_map=MAP)


def test_coco_to_voc_map_of_the_shipped_config():
    config = load_config(Path(__file__).parents[2] / "configs" / "zoo_coco_r50v2_to_mbv3_voc.yaml")
    class_map = resolve_class_map(config.distill.class_map, coco_classes(), VOC_CLASSES, teacher="coco")
    labels = dict(zip(VOC_CLASSES, class_map.teacher_labels[1:]))
    # COCO category ids: airplane 5, person 1, couch 63, tv 72
    assert (labels["aeroplane"], labels["person"], labels["sofa"], labels["tvmonitor"]) == (5, 1, 63, 72)
    assert class_map.num_teacher_classes == 91 and class_map.num_student_classes == 21
