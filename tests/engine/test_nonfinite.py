"""NaN and inf losses: stop naming the term and step, keep the last good state; or skip with skip_nonfinite."""

import json

import pytest
import torch
from torch import nn

from tardistill.commands import train
from tardistill.config import load_config
from tardistill.engine import runs
from tardistill.engine.trainable import LossModule
from tardistill.engine.trainer import PrefixedLosses, Schedule, _train_step
from tardistill.errors import NonFiniteLossError
from tardistill.models.checkpoint import load_checkpoint


def nan_at_step(bad_step, term="det/loss_classifier"):
    """A PrefixedLosses whose `term` is NaN at training step `bad_step` (1-based), counted by calls."""
    class NaNAtStep(PrefixedLosses):
        calls = 0

        def forward(self, images, targets):
            losses = super().forward(images, targets)
            NaNAtStep.calls += 1
            if NaNAtStep.calls == bad_step:
                losses[term] = losses[term] * float("nan")
            return losses
    return NaNAtStep


def test_nan_loss_stops_naming_term_and_step_and_keeps_last_good_state(tmp_path, tiny_overrides, monkeypatch):
    config = load_config(None, [*tiny_overrides, "train.iterations=6", "train.eval_every=0"])
    monkeypatch.setattr(runs, "PrefixedLosses", nan_at_step(4))
    with pytest.raises(NonFiniteLossError) as caught:
        runs.train_detector(config, tmp_path)
    message = str(caught.value)
    assert message.startswith("step 4: loss term det/loss_classifier is nan")
    assert "last good training state is step 2" in message and "last_state.safetensors" in message
    tensors, meta = load_checkpoint(tmp_path / "last_state.safetensors")
    assert meta["trainer"]["step"] == 2  # nothing saved from step 3 or the bad step 4
    assert all(t.isfinite().all() for t in tensors.values())
    assert not (tmp_path / "final.safetensors").exists()


def test_skip_nonfinite_skips_the_step_and_counts_it(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setattr(runs, "PrefixedLosses", nan_at_step(3))
    result = train(None, [*tiny_overrides, "train.iterations=5", "train.skip_nonfinite=true"], tmp_path)
    assert result["step"] == 5 and result["skipped_steps"] == 1
    assert json.loads((tmp_path / "result.json").read_text())["skipped_steps"] == 1
    _, meta = load_checkpoint(tmp_path / "last_state.safetensors")
    assert meta["trainer"]["skipped_steps"] == 1  # kept across --resume
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if '"train"' in line]
    assert logged == [1, 2, 4, 5]  # the skipped step has no (NaN) record


class TwoTerms(LossModule):
    """A loss dict with a detection term and a distillation term over one parameter; each weighs 1."""

    def __init__(self, kd_value=1.0, kd_gradient_nan=False):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.kd_value, self.kd_gradient_nan = kd_value, kd_gradient_nan

    def forward(self, images, targets):
        kd = (self.weight * 0).sum() + self.kd_value
        if self.kd_gradient_nan:  # sqrt at 0: a finite loss with an infinite slope
            kd = torch.sqrt(self.weight.sum() * 0)
        return {"det/loss_box_reg": self.weight.pow(2).sum(), "kd/fpn": kd, "stat/gate": torch.tensor(float("nan"))}


def _step(model, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scalars = _train_step(model, [], [], optimizer, Schedule(iterations=10, clip_grad_norm=1.0),
                          [0.1], step=6, device=torch.device("cpu"), amp=False, **kwargs)
    return scalars, optimizer


def test_finite_step_updates_and_ignores_nan_statistics():
    model = TwoTerms()
    scalars, _ = _step(model)
    assert scalars is not None and not torch.equal(model.weight.detach(), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("model, message", [
    (TwoTerms(kd_value=float("inf")), "step 7: loss term kd/fpn is inf"),
    (TwoTerms(kd_gradient_nan=True), "step 7: the gradient norm is nan"),
])
def test_nonfinite_step_raises_or_is_skipped_without_an_update(model, message):
    with pytest.raises(NonFiniteLossError, match=message):
        _step(model)
    assert torch.equal(model.weight.detach(), torch.tensor([1.0, 2.0]))
    scalars, optimizer = _step(model, skip_nonfinite=True)
    assert scalars is None and model.weight.grad is None and not optimizer.state
    assert torch.equal(model.weight.detach(), torch.tensor([1.0, 2.0]))
