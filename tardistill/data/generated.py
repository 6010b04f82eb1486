"""The datasets the project generates offline, by name: synth (the benchmark), digits, shapes (pretraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tardistill.errors import ConfigError

GENERATED_DATASETS = ("synth", "digits", "shapes")


def generate_dataset(name: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Write dataset `name` under `out` (COCO layout); returns its summary (root, classes, split sizes).

    options: the generator's keywords: seed, num_train, num_val, num_test, image_size, workers.
    """
    from tardistill.data.digits import generate_digits
    from tardistill.data.pretrain_shapes import generate_pretrain_shapes
    from tardistill.data.synthetic import generate_synthetic

    generators = {"synth": generate_synthetic, "digits": generate_digits, "shapes": generate_pretrain_shapes}
    if name not in generators:
        raise ConfigError(f"unknown generated dataset '{name}' (valid: {', '.join(GENERATED_DATASETS)})")
    return generators[name](out, **options)
