"""Loading weights from local files only: safetensors, or torch files read with weights_only=True."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tardistill.errors import TardistillError

log = logging.getLogger(__name__)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a torch file without unpickling arbitrary objects.

    torchvision reference-script checkpoints hold {'model': state_dict, 'optimizer': ..., 'args': ...};
    only the tensors under 'model' are taken, and a file whose pickle holds other objects is refused.
    """
    if not path.is_file():
        raise TardistillError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise TardistillError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unsafe or corrupt pickles
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TardistillError(f"{path}: refused to load (only plain tensors are read): {first_line}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TardistillError(f"{path}: expected a state dict of tensors")
    return obj


def load_detector_weights(model: nn.Module, path: Path) -> None:
    """Load full detector weights; shape mismatches (e.g. another class count) are skipped and logged."""
    _load_matching(model, read_state_dict(path), path)


def load_backbone_weights(body: nn.Module, path: Path) -> None:
    """Load ImageNet classification weights into a ResNet/MobileNet body (the fc layer is ignored)."""
    state = read_state_dict(path)
    state = {k.removeprefix("backbone.body."): v for k, v in state.items()}
    _load_matching(body, state, path)


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TardistillError(f"{path}: no tensor matches the model's parameter names and shapes")
    module.load_state_dict(matching, strict=False)
    skipped = len(own) - len(matching)
    if skipped:
        log.warning("%s: loaded %d tensors; %d model tensors kept their initialisation", path, len(matching), skipped)
