"""Name -> distillation method, and building one from its options (`distill.method_options`).

Adding a method: one file in this folder (its dataclass, docs/METHODS.md) and one line in METHODS.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from tardistill.config import check_value
from tardistill.distill.methods.base import DistillMethod
from tardistill.distill.methods.chen2017 import Chen2017
from tardistill.distill.methods.cwd import CWD
from tardistill.distill.methods.fgd import FGD
from tardistill.distill.methods.fgfi import FGFI
from tardistill.distill.methods.fitnet import FitNet
from tardistill.distill.methods.none import NoDistillation
from tardistill.distill.methods.pkd import PKD
from tardistill.distill.methods.tar import TAR
from tardistill.errors import ConfigError

METHODS: dict[str, type[DistillMethod]] = {
    "tar": TAR,
    "none": NoDistillation,
    "fitnet": FitNet,
    "fgfi": FGFI,
    "chen2017": Chen2017,
    "fgd": FGD,
    "pkd": PKD,
    "cwd": CWD,
}


def method_class(name: str, kind: str | None = None) -> type[DistillMethod]:
    """The method called `name`; ConfigError if unknown, or if it cannot distill `kind` detectors."""
    if name not in METHODS:
        raise ConfigError(f"distill.method: unknown method '{name}' (valid: {', '.join(METHODS)})")
    cls = METHODS[name]
    if kind is not None and kind not in cls.kinds:
        supported = [other for other, other_cls in METHODS.items() if kind in other_cls.kinds]
        raise ConfigError(f"distill.method: {name} distills {', '.join(cls.kinds)} only; for {kind} "
                          f"use one of: {', '.join(supported)}")
    return cls


def option_names(cls: type[DistillMethod]) -> list[str]:
    """The options (dataclass fields) of a method, in their declared order."""
    return [field.name for field in dataclasses.fields(cls)]


def build_method(name: str, options: Mapping[str, Any] | None = None, *, kind: str | None = None
                 ) -> DistillMethod:
    """The method called `name` with `options` over its defaults.

    An option the method does not have, or of the wrong type, is a ConfigError that names it and
    lists the valid ones: a misspelt weight must never train silently at its default.
    """
    cls = method_class(name, kind)
    options = dict(options or {})
    valid = option_names(cls)
    unknown = [key for key in options if key not in valid]
    if unknown:
        listed = f"valid: {', '.join(valid)}" if valid else "it takes none"
        raise ConfigError(f"distill.method_options: method {name} has no option '{unknown[0]}' ({listed})")
    hints = typing.get_type_hints(cls)
    checked = {key: check_value(value, hints[key], key=key, source=f"distill.method_options ({name})")
               for key, value in options.items()}
    return cls(**checked)
