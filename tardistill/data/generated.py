"""The datasets the project generates offline, by name: synth (the benchmark), digits, shapes (pretraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GENERATED_DATASETS = ("synth", "digits", "shapes")


def generate_dataset(name: str, out: Path, **options: Any) -> dict[str, Any]:
    """Write dataset `name` under `out` (COCO layout); returns its summary (root, classes, split sizes)."""
    from tardistill.data.digits import generate_digits
    from tardistill.data.pretrain_shapes import generate_pretrain_shapes
    from tardistill.data.synthetic import generate_synthetic

    generators = {"synth": generate_synthetic, "digits": generate_digits, "shapes": generate_pretrain_shapes}
    return generators[name](out, **options)
