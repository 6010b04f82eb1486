"""Learning-rate schedule and resumable batch order."""

import math

import pytest

from tardistill.engine.sampling import ResumableBatchSampler
from tardistill.engine.schedule import build_optimizer, lr_factor
from tardistill.errors import ConfigError


def test_warmup_then_multistep():
    kwargs = dict(total_steps=100, schedule="multistep", warmup_steps=10, warmup_factor=0.1,
                  milestones=(0.5, 0.8), gamma=0.1)
    assert lr_factor(0, **kwargs) == pytest.approx(0.1)
    assert lr_factor(5, **kwargs) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_factor(10, **kwargs) == 1.0
    assert lr_factor(50, **kwargs) == pytest.approx(0.1)
    assert lr_factor(80, **kwargs) == pytest.approx(0.01)


def test_cosine():
    assert lr_factor(0, total_steps=100, schedule="cosine") == 1.0
    assert lr_factor(50, total_steps=100, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(100, total_steps=100, schedule="cosine") == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(lr_factor(150, total_steps=100, schedule="cosine"))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match="valid: multistep, cosine"):
        lr_factor(0, total_steps=1, schedule="poly")
    with pytest.raises(ConfigError, match="valid: sgd, adamw"):
        build_optimizer([], "lamb", lr=0.1)


def test_resumed_sampler_continues_the_same_sequence():
    full = iter(ResumableBatchSampler(10, 3, seed=4))
    batches = [next(full) for _ in range(7)]  # crosses two epoch boundaries (3 batches per epoch)
    resumed = iter(ResumableBatchSampler(10, 3, seed=4, start_step=4))
    assert [next(resumed) for _ in range(3)] == batches[4:]
    assert sorted(sum(batches[:3], [])) == sorted(set(sum(batches[:3], [])))  # no repeats in an epoch
