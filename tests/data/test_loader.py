"""build_dataset dispatch, collation and deterministic shuffling."""

import pytest
import torch
from PIL import Image

from tardistill.data import (
    VOC_CLASSES,
    CocoDetection,
    VOCDetection,
    build_dataset,
    build_loader,
    collate_detection,
    generate_synthetic,
)
from tardistill.data.loader import check_splits_agree
from tardistill.errors import ConfigError, DataError


class _Indexed(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.zeros(3, 2, 2), {"boxes": torch.zeros(0, 4), "image_id": index}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_train=3, num_val=1, num_test=1, image_size=64, workers=1)
    return root


def test_unknown_format_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="coco, voc, synth"):
        build_dataset("yolo", tmp_path, "train", train=True)


def test_missing_root_named(tmp_path):
    with pytest.raises(DataError, match="nowhere: dataset root not found"):
        build_dataset("coco", tmp_path / "nowhere", "train", train=True)


def test_synth_and_coco_layouts(synth_root, tmp_path):
    synth = build_dataset("synth", synth_root, "train", train=True)
    assert isinstance(synth, CocoDetection) and len(synth) == 3
    # The same files as a COCO root: images in root/<split>, annotations/<split>.json.
    coco = build_dataset("coco", synth_root, "val", train=False, classes=synth.classes)
    assert len(coco) == 1 and coco.train is False
    with pytest.raises(DataError, match="differ from data.classes"):
        build_dataset("synth", synth_root, "val", train=False, classes=["a", "b"])


def test_voc_defaults_to_voc_classes(tmp_path):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "JPEGImages/im.jpg")
    (tmp_path / "Annotations/im.xml").write_text(
        "<annotation><size><width>8</width><height>6</height></size><object><name>person"
        "</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox>"
        "</object></annotation>")
    (tmp_path / "ImageSets/Main/trainval.txt").write_text("im\n")
    dataset = build_dataset("voc", tmp_path, "trainval", train=True)
    assert isinstance(dataset, VOCDetection) and dataset.classes == list(VOC_CLASSES)
    _assert_target_format(*dataset[0], num_classes=20)
    assert dataset[0][1]["boxes"].tolist() == [[1, 1, 5, 6]]


def _assert_target_format(image, target, *, num_classes):
    """The item format stated in tardistill/data/__init__.py."""
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert target["labels"].dtype == torch.int64
    assert target["labels"].shape == (len(target["boxes"]),)
    assert ((target["labels"] >= 1) & (target["labels"] <= num_classes)).all()
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    assert isinstance(target["image_id"], int)


def test_synth_items_follow_target_format(synth_root):
    dataset = build_dataset("synth", synth_root, "train", train=True)
    for index in range(len(dataset)):
        _assert_target_format(*dataset[index], num_classes=len(dataset.classes))


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"image_id": 0}), (torch.zeros(3, 6, 2), {"image_id": 1})]
    images, targets = collate_detection(batch)
    assert [i.shape[1:] for i in images] == [(4, 5), (6, 2)]
    assert [t["image_id"] for t in targets] == [0, 1]


def _order(loader):
    return [t["image_id"] for _, targets in loader for t in targets]


def test_shuffle_is_seeded():
    dataset = _Indexed()
    first = _order(build_loader(dataset, batch_size=3, shuffle=True, seed=1))
    assert first == _order(build_loader(dataset, batch_size=3, shuffle=True, seed=1))
    assert first != _order(build_loader(dataset, batch_size=3, shuffle=True, seed=2))
    assert sorted(first) == list(range(10))
    unshuffled = build_loader(dataset, batch_size=4, shuffle=False, drop_last=True)
    assert _order(unshuffled) == list(range(8))


def _split_with(synth_root, tmp_path, split, change):
    """A copy of the synthetic dataset whose `split` annotation file `change(coco)` has edited."""
    import json
    import shutil

    root = tmp_path / "copy"
    if not root.exists():
        shutil.copytree(synth_root, root)
    path = root / "annotations" / f"{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return root


def _splits(root):
    return {split: build_dataset("synth", root, split, train=split == "train") for split in ("train", "val", "test")}


def test_splits_of_the_synthetic_dataset_agree(synth_root):
    check_splits_agree(_splits(synth_root))


def test_a_category_only_in_train_stops_before_training(synth_root, tmp_path):
    def add_giraffe(coco):
        coco["categories"].append({"id": 99, "name": "giraffe"})
    root = _split_with(synth_root, tmp_path, "train", add_giraffe)
    with pytest.raises(DataError, match=r"val.json: its categories differ from the train split's \(.*train.json\): "
                                        "only in train: giraffe; every split needs the same categories, "
                                        "with the same ids"):
        check_splits_agree(_splits(root))


def test_category_names_swapped_between_splits_are_an_error(synth_root, tmp_path):
    def swap_first_two(coco):
        first, second = coco["categories"][:2]
        first["name"], second["name"] = second["name"], first["name"]
    root = _split_with(synth_root, tmp_path, "test", swap_first_two)
    with pytest.raises(DataError, match="test.json: .*the same names under other ids: 'hexagon' is id 1 here, "
                                        "2 in train, 'circle' is id 2 here, 1 in train"):
        check_splits_agree(_splits(root))


def test_a_split_without_annotations_is_an_error_for_train_and_a_warning_otherwise(synth_root, tmp_path, caplog):
    def drop_annotations(coco):
        coco["annotations"] = []
    root = _split_with(synth_root, tmp_path, "val", drop_annotations)
    check_splits_agree(_splits(root))
    assert "val.json: the val split has no annotated objects; its AP is undefined (-1)" in caplog.text
    root = _split_with(synth_root, tmp_path, "train", drop_annotations)
    with pytest.raises(DataError, match="train.json: the train split has no annotated objects to learn from"):
        check_splits_agree(_splits(root))
