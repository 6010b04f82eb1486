"""tardistill: distill object detectors with task-adaptive regularization.

The public Python API. Each name is imported on first use, so `import tardistill` (and
`tardistill --help`) does not load torch.

Runs, as the command line does them (`tardistill train | distill | eval`):
    load_config, Config, train, train_student, evaluate_checkpoint
Parts, for a training loop of your own (README, "In your own training loop"):
    generate_dataset, build_dataset, build_loader, build_detector, load_detector, resolve_class_map,
    build_pair, build_distiller, Distiller, evaluate
"""

import importlib as _importlib

# name -> the module that defines it
_HOMES = {
    "Config": "tardistill.config",
    "load_config": "tardistill.config",
    "train": "tardistill.engine.runs",
    "train_student": "tardistill.distill.runs",
    "evaluate_checkpoint": "tardistill.engine.runs",
    "generate_dataset": "tardistill.data.generated",
    "build_dataset": "tardistill.data.loader",
    "build_loader": "tardistill.data.loader",
    "build_detector": "tardistill.models.build",
    "load_detector": "tardistill.engine.setup",
    "resolve_class_map": "tardistill.distill.class_map",
    "build_pair": "tardistill.distill.pair",
    "build_distiller": "tardistill.distill.pair",
    "Distiller": "tardistill.distill.distiller",
    "evaluate": "tardistill.engine.evaluator",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    """Import a public name from its module the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'tardistill' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
