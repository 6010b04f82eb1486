import math

import pytest

from tardistill.distill import decay_weight
from tardistill.errors import ConfigError


@pytest.mark.parametrize("kind, expected", [
    ("linear", (1.0, 0.5, 0.0)),        # 1 - t / t_max
    ("constant", (1.0, 1.0, 1.0)),
    ("cosine", (1.0, 0.5, 0.0)),        # (1 + cos(pi/2)) / 2 = 0.5, (1 + cos(pi)) / 2 = 0
    ("step", (1.0, 0.0, 0.0)),          # f = 0.5: 0 from t = f * t_max on
    ("exp", (1.0, 0.1, 0.01)),          # 0.01^0.5 = 0.1, 0.01^1
])
def test_decay_at_start_middle_end(kind, expected):
    got = tuple(decay_weight(kind, step, 100) for step in (0, 50, 100))
    assert got == pytest.approx(expected, abs=1e-12)


def test_decay_options():
    assert decay_weight("step", 29, 100, step_fraction=0.3) == 1.0
    assert decay_weight("step", 30, 100, step_fraction=0.3) == 0.0
    assert decay_weight("exp", 100, 100, gamma=0.5) == pytest.approx(0.5)
    assert decay_weight("cosine", 25, 100) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert decay_weight("linear", 150, 100) == 0.0  # past t_max: clamped, never negative


def test_unknown_decay_lists_valid_names():
    with pytest.raises(ConfigError, match="linear, constant, cosine, step, exp"):
        decay_weight("poly", 0, 10)
