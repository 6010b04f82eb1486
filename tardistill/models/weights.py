"""Loading weights from local files only: safetensors, or torch files read without running their pickle.

A torch file is a pickle, and a pickle can name any function to call. torch's weights-only
unpickler rebuilds tensors and plain containers only. torchvision reference-script checkpoints
({'model': state_dict, 'optimizer': ..., 'args': argparse.Namespace, 'epoch': int}) also pickle
other objects; each such object is rebuilt as an inert stand-in (its class is never imported, its
constructor never called) and dropped, and the tensors under 'model' are returned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tardistill.errors import TardistillError

log = logging.getLogger(__name__)

# Globals that run commands or code, touch files or import modules. No honest checkpoint names one,
# so a file that does is refused whole. This list only makes the refusal explicit: safety does not
# rest on it, since no global outside torch's allowlist is ever imported or called.
CODE_RUNNING_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib", "runpy", "pty", "code",
    "codeop", "ctypes", "pickle", "_pickle", "marshal", "multiprocessing", "webbrowser", "io", "_io",
    "tempfile", "signal", "operator", "functools", "types", "inspect", "torch.hub",
})
CODE_RUNNING_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "input", "exit", "quit", "help", "print",
})


class RefusedObject:
    """An inert stand-in for a pickled object of a class or function that is not allowed.

    Unpickling may construct it and set its state; both are no-ops, so nothing of the original runs.
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> RefusedObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<refused {self.global_name}>"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a torch file (a state dict, or one under 'model')."""
    if not path.is_file():
        raise TardistillError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise TardistillError(f"{path}: not a readable safetensors file ({err})") from None
    obj, refused = read_torch_file(path)
    state = _tensors_in(obj, path)
    if refused:
        log.warning("%s: dropped pickled objects that are not weights (never imported or run): %s",
                    path, ", ".join(refused))
    return state


def read_torch_file(path: Path) -> tuple[Any, list[str]]:
    """The object in a torch file, and the names of the pickled globals it refused.

    Every object outside torch's weights-only allowlist is refused: in files saved by torch >= 1.6
    (zip format) it becomes an inert stand-in; an older (legacy) file that holds one is refused whole.
    """
    unknown = _unknown_globals(path)
    code_running = sorted(name for name in unknown if _runs_code(name))
    if code_running:
        raise TardistillError(f"{path}: refused: its pickle calls {', '.join(code_running)}, which can run "
                              "commands or code or write files; nothing in it was executed. Use weights from a "
                              "source you trust")
    stand_ins = [(type("RefusedObject", (RefusedObject,), {"global_name": name}), name) for name in unknown]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unsafe or corrupt pickles
        raise TardistillError(f"{path}: refused to load (only plain tensors are read): {_reason(err)}") from None
    return obj, unknown


def _reason(err: Exception) -> str:
    """The line of a torch.load error that says what was wrong, without torch's generic advice."""
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(generic)]
    return (specific or lines or [type(err).__name__])[0]


def _unknown_globals(path: Path) -> list[str]:
    """Globals the pickle names beyond torch's allowlist, read statically (nothing is unpickled)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except ValueError as err:
        if "torchscript" in str(err).lower():
            raise TardistillError(f"{path}: a TorchScript archive holds code, not only weights; save the "
                                  "model's state_dict() instead") from None
        return []  # not a zip-format torch file: torch.load's legacy reader refuses unknown globals
    except Exception as err:  # an opcode the static reader does not know: torch.load would refuse it too
        raise TardistillError(f"{path}: refused to load (unreadable torch file: {err})") from None


def _runs_code(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    if module == "builtins":
        return attribute in CODE_RUNNING_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in CODE_RUNNING_MODULES)


def _tensors_in(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict itself, or the one a reference-script checkpoint keeps under 'model'."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise TardistillError(f"{path}: expected a state dict of tensors, or a checkpoint with one under "
                              f"'model'; found {_describe(obj)}")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise TardistillError(f"{path}: expected a state dict of tensors; entry {key!r} is {_describe(value)}")
    return dict(obj)


def _describe(obj: Any) -> str:
    if isinstance(obj, RefusedObject):  # e.g. torch.save(model): a whole model is code, not data
        return f"{obj!r}, which is not read; save the model's state_dict() instead"
    return type(obj).__name__


def load_detector_weights(model: nn.Module, path: Path, *, strict: bool = False) -> None:
    """Load full detector weights.

    Args:
        strict: every model tensor must come from the file (a teacher must not keep random parts);
            otherwise tensors of another shape (another class count) are skipped and logged.
    """
    state = read_state_dict(path)
    if strict:
        _check_complete(model, state, path)
    _load_matching(model, state, path)


def load_backbone_weights(body: nn.Module, path: Path) -> None:
    """Load ImageNet classification weights into a ResNet/MobileNet body (the classifier is ignored)."""
    state = read_state_dict(path)
    # torchvision's MobileNet keeps its blocks under `features.`; the detection body holds them bare.
    state = {k.removeprefix("backbone.body.").removeprefix("features."): v for k, v in state.items()}
    _load_matching(body, state, path)


def _check_complete(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    problems = []
    for key, own in model.state_dict().items():
        if key.endswith("num_batches_tracked"):  # a batch-norm counter; it does not change outputs
            continue
        if key not in state:
            problems.append(f"{key} missing")
        elif state[key].shape != own.shape:
            problems.append(f"{key} is {list(state[key].shape)} in the file, {list(own.shape)} in the model")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise TardistillError(f"{path}: the weights do not fit the model ({shown}); check the "
                              "architecture and the class count")


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TardistillError(f"{path}: no tensor matches the model's parameter names and shapes")
    module.load_state_dict(matching, strict=False)
    skipped = len(own) - len(matching)
    if skipped:
        log.warning("%s: loaded %d tensors; %d model tensors kept their initialisation", path, len(matching), skipped)
