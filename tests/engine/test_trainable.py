"""The engine's contract (`Trainable`): what plain training and distillation each give the trainer."""

import torch

from tardistill.engine.trainable import LossModule, Trainable
from tardistill.engine.trainer import PrefixedLosses, training_state_dict
from tardistill.models.build import build_detector


def test_plain_training_weighs_every_loss_1_and_trains_and_saves_everything():
    model = PrefixedLosses(build_detector("faster_rcnn", "resnet18", num_classes=3, width_multiplier=0.125,
                                          fpn_channels=16, head_width=32))
    assert isinstance(model, Trainable) and isinstance(model, LossModule)
    losses = {"det/a": torch.tensor(2.0), "det/b": torch.tensor(3.0), "stat/x": torch.tensor(7.0)}
    total, weights = model.weighted_total(losses, 0, 10)
    assert total.item() == 5.0 and weights == {}
    assert len(model.trainable_parameters()) == len(list(model.parameters()))
    assert model.frozen_state_keys() == set() and training_state_dict(model).keys() == model.state_dict().keys()

