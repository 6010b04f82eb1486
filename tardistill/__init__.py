"""tardistill: distill object detectors with task-adaptive regularization."""
