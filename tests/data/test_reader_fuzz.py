"""Fuzzed COCO JSON and VOC XML: every problem is a DataError naming the file, never another exception."""

import json
import warnings
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tardistill.data import CocoDetection, VOCDetection
from tardistill.errors import DataError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICIES = ("error", "skip")

# The values that broke readers before: they get a branch of their own so 50 examples meet them.
EDGE_VALUES = [float("inf"), float("-inf"), float("nan"), 10**40, -1, 0, 0.5, True, "", "7", [], {}]
json_values = st.recursive(
    st.sampled_from(EDGE_VALUES) | st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _valid_coco():
    return {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                       {"id": 2, "file_name": "b.png", "width": 20, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},
                            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [2, 2, 8, 4],
                             "iscrowd": 0}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_fuzz")
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((10, 20, 3), 90, np.uint8)).save(root / name)
    return root


def _build_and_load(image_dir, annotation_file, policy, *, train=False):
    """Construct the dataset and load every item; returns the dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # box-policy warnings are expected here
        dataset = CocoDetection(image_dir, annotation_file, on_bad_sample=policy, train=train)
        for index in range(len(dataset)):
            try:
                dataset[index]
            except DataError as error:
                if policy == "error" or type(error).__name__ != "SampleSkipped":
                    raise
    return dataset


def _expect_only_data_errors(image_dir, annotation_file, text, policy):
    annotation_file.write_text(text, encoding="utf-8")
    try:
        _build_and_load(image_dir, annotation_file, policy)
    except DataError as error:
        assert annotation_file.name in str(error) or ".png" in str(error), str(error)


@st.composite
def mutated_coco(draw):
    """A valid COCO document with one field, one record or one section replaced or removed."""
    coco = _valid_coco()
    section = draw(st.sampled_from(["images", "annotations", "categories"]))
    records = coco[section]
    index = draw(st.integers(0, len(records) - 1))
    kind = draw(st.sampled_from(["field", "field", "field", "delete", "record", "section"]))
    if kind == "section":
        coco[section] = draw(json_values)
    elif kind == "record":
        records[index] = draw(json_values)
    else:
        key = draw(st.sampled_from(sorted(records[index])))
        if kind == "delete":
            del records[index][key]
        else:
            records[index][key] = draw(st.sampled_from(EDGE_VALUES) | json_values)
    return coco


@FUZZ
@given(coco=mutated_coco(), policy=st.sampled_from(POLICIES))
def test_mutated_coco_records_raise_only_data_errors(coco_dir, coco, policy):
    _expect_only_data_errors(coco_dir, coco_dir / "ann.json", json.dumps(coco), policy)


@FUZZ
@given(cut=st.integers(0, 400), policy=st.sampled_from(POLICIES))
def test_truncated_coco_json_raises_only_data_errors(coco_dir, cut, policy):
    text = json.dumps(_valid_coco())
    _expect_only_data_errors(coco_dir, coco_dir / "ann.json", text[:cut], policy)


@FUZZ
@given(box=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4),
       policy=st.sampled_from(POLICIES))
def test_any_box_numbers_are_clipped_or_dropped(coco_dir, box, policy):
    coco = _valid_coco()
    coco["annotations"][0]["bbox"] = box
    (coco_dir / "ann.json").write_text(json.dumps(coco))
    dataset = _build_and_load(coco_dir, coco_dir / "ann.json", policy)
    for index in range(len(dataset)):
        boxes = dataset[index][1]["boxes"]
        assert boxes.isfinite().all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= 20).all() and (boxes[:, 1::2] <= 10).all()


@pytest.mark.parametrize("section, index, key, value, named", [
    ("annotations", 1, "bbox", "0123", "annotations[1] (id 2)"),
    ("annotations", 0, "image_id", float("inf"), "annotations[0] (id 1)"),
    ("annotations", 1, "image_id", 99, "annotations[1] (id 2) refers to unknown image_id 99"),
    ("images", 1, "width", float("nan"), "images[1]"),
    ("images", 0, "height", 10**40, "images[0] (a.png) has size 20x"),
    ("images", 1, "file_name", ["b.png"], "images[1] has no file_name"),
    ("categories", 1, "id", None, "categories[1]"),
])
def test_bad_record_named_with_its_file(coco_dir, section, index, key, value, named):
    coco = _valid_coco()
    coco[section][index][key] = value
    (coco_dir / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(DataError) as caught:
        _build_and_load(coco_dir, coco_dir / "ann.json", "error")
    assert "ann.json: " in str(caught.value) and named in str(caught.value)


def test_deeply_nested_and_huge_number_json_are_data_errors(coco_dir):
    for text in ("[" * 100_000, '{"images": [' + "1" * 5000 + "]}"):
        (coco_dir / "ann.json").write_text(text)
        with pytest.raises(DataError, match=r"ann\.json: malformed JSON"):
            CocoDetection(coco_dir, coco_dir / "ann.json")


# VOC: XML built from fuzzed texts, truncated XML, and arbitrary bytes.
voc_texts = (st.sampled_from(["", "nan", "inf", "-inf", "1e400", "abc", "-5", "0", "32.5", "24", "3"])
             | st.integers(-100, 100).map(str) | st.floats().map(str) | st.text(max_size=6))


@st.composite
def voc_xml(draw):
    """A VOC annotation whose every text, and whether each element is there, is drawn."""
    def element(tag, value):
        return "" if value is None else f"<{tag}>{escape(value)}</{tag}>"

    maybe = lambda strategy: st.none() | strategy  # noqa: E731 - a missing element is a case too
    size = element("width", draw(maybe(voc_texts))) + element("height", draw(maybe(voc_texts)))
    objects = []
    for _ in range(draw(st.integers(0, 3))):
        box = "".join(element(tag, draw(maybe(voc_texts))) for tag in ("xmin", "ymin", "xmax", "ymax"))
        name = draw(st.sampled_from(["dog", "cat"]) | voc_texts)
        objects.append(f"<object>{element('name', name)}{element('difficult', draw(maybe(voc_texts)))}"
                       f"{'' if draw(st.booleans()) else f'<bndbox>{box}</bndbox>'}</object>")
    return f"<annotation>{'' if draw(st.booleans()) else f'<size>{size}</size>'}{''.join(objects)}</annotation>"


GOOD_XML = ("<annotation><size><width>32</width><height>24</height></size><object><name>dog</name>"
            "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """A devkit with a good image 'good' and an image 'bad' whose XML each example rewrites."""
    root = tmp_path_factory.mktemp("voc_fuzz")
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for stem in ("good", "bad"):
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / f"JPEGImages/{stem}.jpg")
    (root / "Annotations/good.xml").write_text(GOOD_XML)
    (root / "ImageSets/Main/train.txt").write_text("good\nbad\n")
    return root


def _check_voc(root, data: bytes, policy):
    (root / "Annotations/bad.xml").write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = VOCDetection(root, "train", on_bad_sample=policy)
            items = [dataset[i] for i in range(len(dataset))]
    except DataError as error:
        assert policy == "error", f"skip should leave out bad.xml, not stop: {error}"
        assert "bad.xml: " in str(error), str(error)
        return
    assert items and all(target["boxes"].isfinite().all() for _, target in items)


@FUZZ
@given(xml=voc_xml(), policy=st.sampled_from(POLICIES))
def test_fuzzed_voc_xml_raises_only_data_errors(voc_root, xml, policy):
    _check_voc(voc_root, xml.encode("utf-8", "surrogatepass"), policy)


@FUZZ
@given(cut=st.integers(0, len(GOOD_XML)), junk=st.binary(max_size=8), policy=st.sampled_from(POLICIES))
def test_truncated_or_garbled_voc_xml_raises_only_data_errors(voc_root, cut, junk, policy):
    _check_voc(voc_root, GOOD_XML.encode()[:cut] + junk, policy)


@pytest.mark.parametrize("xml, named", [
    ("<annotation><size><width>nan</width><height>24</height></size></annotation>", "<width> is nan"),
    ("<annotation><size><width>1e400</width><height>24</height></size></annotation>", "<width> is inf"),
    ('<?xml version="1.0" encoding="no-such-codec"?><annotation/>', "malformed XML"),
    (GOOD_XML.replace("<xmin>2</xmin>", "<xmin>two</xmin>"), "object #0 (dog) has no numeric <xmin>"),
    (GOOD_XML.replace("<bndbox>", "<bndbx>").replace("</bndbox>", "</bndbx>"), "object #0 (dog) has no <bndbox>"),
])
def test_bad_voc_record_named_with_its_file(voc_root, xml, named):
    (voc_root / "Annotations/bad.xml").write_text(xml)
    with pytest.raises(DataError) as caught:
        VOCDetection(voc_root, "train")
    assert "bad.xml: " in str(caught.value) and named in str(caught.value)

