"""TAR distillation: the Distiller module, its loss terms, masks and decay schedules."""

from tardistill.distill.decay import decay_weight
from tardistill.distill.distiller import Distiller
from tardistill.distill.masks import gaussian_mask

__all__ = ["Distiller", "decay_weight", "gaussian_mask"]
