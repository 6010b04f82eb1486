"""Detection metrics: COCO AP/AR (faster-coco-eval), VOC AP (numpy), and terminal tables."""

from tardistill.metrics.coco import COCO_METRIC_NAMES, coco_metrics, load_detections, validate_detections
from tardistill.metrics.table import format_metrics_table, format_table
from tardistill.metrics.voc import voc_ap, voc_metrics

__all__ = [
    "COCO_METRIC_NAMES",
    "coco_metrics",
    "format_metrics_table",
    "format_table",
    "load_detections",
    "validate_detections",
    "voc_ap",
    "voc_metrics",
]
