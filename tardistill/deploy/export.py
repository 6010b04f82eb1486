"""Export a torchvision detector alone to ONNX or TorchScript with one fixed input: one image.

Why these exporter paths (torch 2.14, torchvision 0.29):
- ONNX uses the TorchScript-based exporter (`dynamo=False`, opset 17), which is what torchvision's
  own ONNX tests use. The dynamo exporter (`dynamo=True`) fails inside torchvision's batched NMS:
  torch.export cannot guard on the data-dependent number of boxes that survive the score threshold.
- The batch is static, one image: torchvision detectors take a Python list of images, which the
  exporter unrolls into one graph input per image, so a dynamic batch is broken upstream. The image
  size is static too, so that the whole graph, resizing included, is fixed and simple for runtimes.
- TorchScript uses torch.jit.script, which torchvision's detectors support; unlike tracing it keeps
  the data-dependent control flow (score threshold, NMS, empty outputs), and any image size works.
  torch 2.14 marks torch.jit deprecated (FutureWarning) but it still works; the warning is hidden.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from tardistill.errors import TardistillError

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "scores", "labels")


class SingleImageDetector(nn.Module):
    """One float RGB image [3, H, W] in 0..1 -> (boxes [N, 4] xyxy px, scores [N], labels [N] int64).

    One fixed output order for both detector kinds: torchvision's Faster R-CNN and RetinaNet put
    the keys of their result dicts in different orders, which ONNX would flatten differently.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if torch.jit.is_scripting():
            _, detections = self.detector([image])  # scripted detectors return (losses, detections)
        else:
            detections = self.detector([image])
        return detections[0]["boxes"], detections[0]["scores"], detections[0]["labels"]


def export_detector(detector: nn.Module, out: str | Path, *, export_format: str, image_size: int,
                    classes: list[str] | None = None) -> Path:
    """Write `detector` to `out` as ONNX (input [3, image_size, image_size]) or TorchScript.

    Args:
        classes: names of labels 1..K, stored in the file (a JSON list: ONNX metadata "classes",
            TorchScript extra file "classes.json"), so a deployment can name what it detects.
    """
    if export_format not in EXPORT_FORMATS:
        raise TardistillError(f"unknown export format '{export_format}' (valid: {', '.join(EXPORT_FORMATS)})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = SingleImageDetector(detector.to("cpu")).eval()
    classes_json = json.dumps(list(classes or []))
    if export_format == "onnx":
        _export_onnx(module, out, image_size=image_size, classes_json=classes_json)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still works
            torch.jit.save(torch.jit.script(module), str(out), _extra_files={"classes.json": classes_json})
    return out


def _export_onnx(module: SingleImageDetector, out: Path, *, image_size: int, classes_json: str) -> None:
    try:
        import onnx
    except ImportError:
        raise TardistillError("ONNX export needs onnx and onnxruntime: pip install 'tardistill[export]'") from None
    example = torch.rand(3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python number it freezes (image sizes, scale factors); with a
        # static input size they are constants by design. The legacy exporter also warns that it
        # is deprecated; it is the one that handles torchvision's NMS (see the module docstring).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=list(OUTPUT_NAMES))
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {"classes": classes_json})
    onnx.save(model, str(out))
