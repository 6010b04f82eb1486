"""A method is one unit: its options from Python or config are checked against its fields, and a
method registered from outside trains like a built-in one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet
from torch import Tensor, nn

from tardistill.config import DistillConfig, load_config
from tardistill.distill import Distiller
from tardistill.distill.methods.base import DistillMethod, FpnLevel, Outputs
from tardistill.distill.methods.registry import METHODS, build_method, option_names
from tardistill.distill.methods.tar import TAR
from tardistill.distill.pair import TAR_FLAT_KEYS, method_from_config
from tardistill.engine.trainable import Trainable
from tardistill.engine.trainer import training_state_dict
from tardistill.errors import ConfigError


def test_every_method_is_registered_under_its_own_name_with_valid_defaults():
    for name, cls in METHODS.items():
        assert cls.name == name
        method = cls()  # the paper's defaults pass the method's own checks
        assert all(weight >= 0 for weight in method.loss_weights(cls.kinds[0]).values())
        assert set(method.loss_weights(cls.kinds[0])) >= set(method.feature_terms) | set(method.head_terms)


def test_the_flat_config_keys_default_to_tars_defaults():
    defaults = {field.name: field.default for field in dataclasses.fields(DistillConfig)}
    assert {key: defaults[key] for key in TAR_FLAT_KEYS} == dataclasses.asdict(TAR())


def test_a_baselines_weight_from_python_is_applied_and_one_it_lacks_is_refused():
    teacher, student = tiny_faster_rcnn(seed=1), tiny_faster_rcnn()
    fitnet = Distiller(teacher, student, method="fitnet", fpn_weight=5)
    assert fitnet.loss_weights(0, 10)["kd/fpn"] == 5.0
    with pytest.raises(ConfigError, match=r"method fgd has no option 'fpn_weight' \(valid: alpha, beta, gamma, "
                                          r"lam, temperature\)"):
        Distiller(teacher, student, method="fgd", fpn_weight=5)
    with pytest.raises(ConfigError, match=r"method none has no option 'tau' \(it takes none\)"):
        Distiller(teacher, student, method="none", tau=2.0)
    with pytest.raises(ConfigError, match="options .'psi'. given beside a method already built"):
        Distiller(teacher, student, method=build_method("fgfi"), psi=0.3)


def test_option_types_and_ranges_are_checked():
    with pytest.raises(ConfigError, match=r"key 'psi' expects float, got 'half'"):
        build_method("fgfi", {"psi": "half"})
    with pytest.raises(ConfigError, match="truncate' expects bool"):
        build_method("tar", {"truncate": 1})
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_method("fgd", {"temperature": 0.0})
    assert build_method("chen2017", {"margin": 1}).margin == 1.0  # an int is a float


def test_method_options_come_from_the_config():
    config = load_config(None, ["distill.method=chen2017", "distill.method_options.mu=0.25",
                                "distill.method_options.reg_weight=2"])
    chen = method_from_config(config.distill, "faster_rcnn")
    assert (chen.mu, chen.loss_weights("faster_rcnn")["kd/reg"], chen.tau) == (0.25, 2.0, 1.0)
    tar = method_from_config(load_config(None, ["distill.beta=1.0", "distill.method_options.tau=2"]).distill,
                             "faster_rcnn")
    assert (tar.beta, tar.tau, tar.fpn_weight) == (1.0, 2.0, DistillConfig().fpn_weight)


@pytest.mark.parametrize("overrides, match", [
    (["distill.method=fitnet", "distill.method_options.fpn_wieght=5"],
     r"method fitnet has no option 'fpn_wieght' \(valid: fpn_weight\)"),
    (["distill.method=fitnet", "distill.fpn_weight=5"],
     r"distill.fpn_weight is an option of TAR, not of method fitnet; set fitnet's options in "
     r"distill.method_options \(valid: fpn_weight\)"),
    (["distill.method=fgd", "distill.cls_gate=all"], "distill.cls_gate is an option of TAR"),
    (["distill.fpn_weight=2", "distill.method_options.fpn_weight=3"],
     "distill.fpn_weight and distill.method_options.fpn_weight both set"),
    (["distill.method=chen2017", "distill.method_options.mu=-1"], "mu must be >= 0"),
])
def test_config_option_mistakes_name_the_option(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method_from_config(load_config(None, overrides).distill, "faster_rcnn")


@dataclass(frozen=True)
class MeanFeatureGap(DistillMethod):
    """A method defined outside the package: |mean(S) - mean(T)| per level, with its own decay."""

    name = "mean_gap"
    default_decay = "cosine"
    feature_terms = ("kd/gap",)

    gap_weight: float = 2.0

    def loss_weights(self, kind: str) -> dict[str, float]:
        return {"kd/gap": self.gap_weight}

    def terms(self, out: Outputs, levels: list[FpnLevel], modules: nn.Module | None) -> dict[str, Tensor]:
        return {"kd/gap": sum((level.student.mean() - level.teacher.mean()).abs() for level in levels)}


def test_a_method_registered_from_outside_trains(monkeypatch):
    monkeypatch.setitem(METHODS, "mean_gap", MeanFeatureGap)
    distiller = Distiller(tiny_retinanet(seed=1), tiny_retinanet(), method="mean_gap", gap_weight=3)
    assert distiller.decay == "cosine" and distiller.loss_weights(0, 10)["kd/gap"] == 3.0
    losses = distiller(*tiny_batch())
    assert losses["kd/gap"].item() > 0
    distiller.weighted_total(losses, 0, 10)[0].backward()
    assert distiller.adapters.convs["0"].weight.grad is not None
    assert option_names(MeanFeatureGap) == ["gap_weight"]
    config = load_config(None, ["distill.method=mean_gap", "distill.method_options.gap_weight=0.5"])
    assert method_from_config(config.distill, "retinanet") == MeanFeatureGap(gap_weight=0.5)


def test_weighted_total_is_the_trainers_sum():
    distiller = Distiller(tiny_faster_rcnn(seed=1), tiny_faster_rcnn(), method="fgfi")
    losses = {"det/loss_classifier": torch.tensor(2.0), "kd/fpn": torch.tensor(3.0),
              "stat/reg_gate_rate": torch.tensor(float("nan"))}
    total, weights = distiller.weighted_total(losses, 0, 10)
    assert total.item() == pytest.approx(2.0 + 0.01 * 3.0) and weights["kd/fpn"] == 0.01


def test_a_distillers_frozen_state_is_exactly_its_teacher():
    teacher = tiny_faster_rcnn(seed=1)
    distiller = Distiller(teacher, tiny_faster_rcnn())
    assert isinstance(distiller, Trainable)
    assert distiller.frozen_state_keys() >= {f"teacher.{key}" for key in teacher.state_dict()}
    saved = training_state_dict(distiller)
    assert not any(key.startswith("teacher.") for key in saved)
    assert saved.keys() == {k for k in distiller.state_dict() if not k.startswith("teacher.")}
    trained = {id(p) for p in distiller.trainable_parameters()}
    assert not any(id(p) in trained for p in teacher.parameters())
