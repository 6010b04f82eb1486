"""Deployment: export a detector alone to ONNX or TorchScript, and check the export against PyTorch."""

from tardistill.deploy.export import EXPORT_FORMATS, SingleImageDetector, export_detector
from tardistill.deploy.parity import check_parity, load_exported

__all__ = ["EXPORT_FORMATS", "SingleImageDetector", "check_parity", "export_detector", "load_exported"]
