"""TAR's defaults are one set: the code's, the example config's, the benchmark's and docs/METHOD.md's."""

import dataclasses
import inspect
from pathlib import Path

from tardistill.bench.presets import PRESETS
from tardistill.config import DistillConfig, load_config
from tardistill.distill.distiller import Distiller
from tardistill.distill.methods.tar import TAR

ROOT = Path(__file__).resolve().parents[1]
TAR_KEYS = ("fpn_weight", "cls_weight", "reg_weight", "beta", "truncate", "fpn_norm", "fpn_tau", "tau", "cls_gate",
            "reg_gate", "sharing", "decay")


def test_config_method_distiller_and_example_config_agree():
    config_defaults = DistillConfig()
    method_defaults = {f.name: f.default for f in dataclasses.fields(TAR)}
    distiller = inspect.signature(Distiller).parameters  # the options that are the Distiller's own
    example = load_config(ROOT / "configs" / "synth_tar_frcnn_r18n.yaml").distill
    for key in TAR_KEYS:
        code_default = method_defaults[key] if key in method_defaults else distiller[key].default
        assert code_default == getattr(config_defaults, key), key
        assert getattr(example, key) == getattr(config_defaults, key), key


def test_benchmark_runs_tar_at_the_shipped_defaults():
    for preset in PRESETS.values():
        assert preset.tar == (), preset.name


def test_method_doc_states_the_defaults():
    text = (ROOT / "docs" / "METHOD.md").read_text()
    defaults = DistillConfig()
    assert (f"`distill.fpn_weight = {defaults.fpn_weight}`, `cls_weight = {defaults.cls_weight}`, "
            f"`reg_weight = {defaults.reg_weight}`") in " ".join(text.split())
    for key in ("fpn_norm", "fpn_tau", "beta", "truncate", "tau", "cls_gate", "reg_gate", "sharing", "decay"):
        value = getattr(defaults, key)
        shown = str(value).lower() if isinstance(value, bool) else value
        assert f"`{key}: {shown}`" in text, key


def test_methods_table_states_the_defaults():
    tar_row = next(line for line in (ROOT / "docs" / "METHODS.md").read_text().splitlines()
                   if line.startswith("| `tar` |"))
    defaults = DistillConfig()
    for key in ("fpn_weight", "cls_weight", "reg_weight", "beta", "truncate", "fpn_norm", "fpn_tau", "tau",
                "cls_gate", "reg_gate"):
        value = getattr(defaults, key)
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
        assert f"`{key}` {shown}" in tar_row, key
