"""Shared fixtures: a tiny synthetic dataset and a tiny, fast detector config."""

import pytest

from tardistill.data.synthetic import generate_synthetic

# A detector small enough that a training step takes milliseconds on the CPU.
TINY_MODEL = ["model.backbone=resnet18", "model.width_multiplier=0.125", "model.fpn_channels=16",
              "model.head_width=32", "model.min_size=64", "model.max_size=64",
              "model.anchor_sizes=[8,16,32,64,128]", "model.rpn_pre_nms_top_n_train=200",
              "model.rpn_post_nms_top_n_train=100", "model.rpn_pre_nms_top_n_test=100",
              "model.rpn_post_nms_top_n_test=50", "model.box_batch_size_per_image=32",
              "model.rpn_batch_size_per_image=64"]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A 64 px synthetic dataset with 8 train, 4 val and 4 test images."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, seed=1, num_train=8, num_val=4, num_test=4, image_size=64, workers=1)
    return root


@pytest.fixture()
def tiny_overrides(tiny_synth):
    """Overrides that train the tiny detector for 4 steps on the tiny dataset."""
    return [*TINY_MODEL, f"data.root={tiny_synth}", "data.format=synth", "train.iterations=4",
            "train.batch_size=2", "train.warmup_iterations=1", "train.eval_every=2",
            "train.checkpoint_every=2", "train.log_every=1", "train.lr=0.01"]


@pytest.fixture(scope="session")
def untrained_teacher(tmp_path_factory, tiny_synth):
    """A checkpoint of an untrained, wider tiny detector on the tiny dataset's classes."""
    from tardistill.config import config_to_dict, load_config
    from tardistill.data.synthetic import SYNTH_CLASSES
    from tardistill.engine.setup import detector_from_config
    from tardistill.models.checkpoint import save_model

    config = load_config(None, [*TINY_MODEL, "model.width_multiplier=0.25", "model.fpn_channels=32",
                                f"data.root={tiny_synth}"])
    teacher = detector_from_config(config.model, len(SYNTH_CLASSES))
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    return save_model(path, teacher, {"config": config_to_dict(config), "classes": list(SYNTH_CLASSES)})
