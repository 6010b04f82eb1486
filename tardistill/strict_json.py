"""JSON files that every parser reads: no NaN or Infinity (Python writes them, strict parsers refuse
them), and written whole or not at all."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def without_nonfinite(value: Any, *, where: str = "") -> tuple[Any, dict[str, str]]:
    """`value` with every NaN or infinite float replaced by None, and {dotted key: what it was}."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, {where: f"{value} (not a JSON number)"}
    nulls: dict[str, str] = {}
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            clean[key], found = without_nonfinite(item, where=f"{where}.{key}" if where else str(key))
            nulls.update(found)
        return clean, nulls
    if isinstance(value, (list, tuple)):
        items = [without_nonfinite(item, where=f"{where}[{index}]") for index, item in enumerate(value)]
        for _, found in items:
            nulls.update(found)
        return [item for item, _ in items], nulls
    return value, nulls


def write_json(path: Path, data: Any) -> None:
    """Write `data` as strict JSON (a NaN raises ValueError), through a temporary file and a rename,
    so a full disk or a kill leaves the previous file rather than half of a new one."""
    text = json.dumps(data, indent=2, allow_nan=False)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
