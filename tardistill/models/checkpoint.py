"""Checkpoints: weights as safetensors, metadata as JSON inside the same file's header.

One file per checkpoint keeps writes atomic (write a temp file, then rename) and needs no pickle.
The JSON metadata holds the config, the class list, the step and the metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from tardistill.errors import StorageError, TardistillError

META_KEY = "tardistill"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write tensors plus JSON-serialisable metadata to `path` (.safetensors)."""
    path = Path(path)
    # safetensors refuses tensors that share memory or are not contiguous; clone the few that are.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as written:  # on disk before the rename, so a power cut cannot leave half a file
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # a read-only folder may refuse this too
            tmp.unlink(missing_ok=True)  # the previous checkpoint at `path` is untouched
        if isinstance(err, OSError):  # disk full, read-only, not a folder: one line naming the file
            raise StorageError(f"{path}: cannot write the checkpoint ({err.strerror or err}); "
                               f"the previous {path.name}, if any, is unchanged") from None
        raise
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (tensors, metadata) written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise TardistillError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(META_KEY, "{}"))
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise TardistillError(f"{path}: not a tardistill checkpoint ({err})") from None
    return tensors, meta


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Only the metadata, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise TardistillError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get(META_KEY, "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise TardistillError(f"{path}: not a tardistill checkpoint ({err})") from None


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Save a model's state dict with metadata."""
    return save_checkpoint(path, model.state_dict(), meta)


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-friendly rest."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{name}"] = value
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in rest["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}
