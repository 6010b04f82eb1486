"""Turn a Config into the parts a run needs: device, seeds, datasets, batches, detectors."""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tardistill.config import Config, DataConfig, ModelConfig, config_from_dict
from tardistill.data.loader import build_dataset, collate_detection
from tardistill.data.transforms import build_train_transforms
from tardistill.engine.distributed import is_distributed, local_rank, rank, rank_seed, world_size
from tardistill.engine.sampling import ResumableBatchSampler, aspect_ratio_groups
from tardistill.errors import ConfigError
from tardistill.models.build import build_detector
from tardistill.models.checkpoint import load_checkpoint
from tardistill.models.weights import load_detector_weights
from tardistill.models.zoo import zoo_architecture

# Model keys that change how a trained detector runs, not what it is: eval and predict apply them.
log = logging.getLogger(__name__)

INFERENCE_KEYS = ("score_threshold", "detections_per_image", "min_size", "max_size", "rpn_pre_nms_top_n_test",
                  "rpn_post_nms_top_n_test")


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; under torchrun, each rank its LOCAL_RANK's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: unknown device '{name}' (valid: auto, cpu, cuda)")
    if name == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return torch.device(name)


def use_bf16(mode: str, device: torch.device) -> bool:
    """bf16 autocast: 'auto' enables it on GPUs that support it; CPU stays in fp32 unless forced.

    Forced on a CPU without native bf16 it still runs, as asked, with a warning: there it is far
    slower than fp32, not faster (cpu_computes_bf16)."""
    if mode == "off":
        return False
    if mode == "bf16":
        if device.type == "cpu" and not cpu_computes_bf16():
            log.warning("train.amp: bf16 on a CPU without native bf16 (torch's CPU capability: %s): its matrix "
                        "products are emulated, tens of times slower than fp32 (docs/RESULTS.md, section 5); "
                        "set train.amp=off on this machine", torch.backends.cpu.get_cpu_capability())
        return True
    if mode != "auto":
        raise ConfigError(f"train.amp: unknown mode '{mode}' (valid: auto, bf16, off)")
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def cpu_computes_bf16() -> bool:
    """Whether this CPU has the instructions (AVX-512 or AMX) that oneDNN computes bf16 with.

    On an AVX2-only CPU (seen here: AMD EPYC without AVX-512) a 512 x 512 bf16 matrix product took
    218 ms against 3.6 ms in fp32, and a bf16 training step was about 19 times slower than on an
    AVX-512 machine. Unknown (a torch without the check) counts as yes: then nothing is said."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU runs reproduce."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dataset_for(data: DataConfig, split: str, *, train: bool):
    """One split of the configured dataset; training splits get flip and jitter augmentation."""
    transforms = build_train_transforms(flip=data.flip, jitter=data.jitter) if train else None
    return build_dataset(data.format, data.root, split, train=train, classes=data.classes,
                         transforms=transforms, on_bad_sample=data.on_bad_sample)


def batch_stream(dataset, *, batch_size: int, seed: int, num_workers: int):
    """A `start_step -> iterator` factory of this rank's training batches (see `fit`).

    `batch_size` is per rank: under torchrun a step trains on batch_size x world size images,
    grouped by aspect ratio when the dataset knows its image sizes.
    """
    groups = aspect_ratio_groups(dataset)

    def make(start_step: int):
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, start_step=start_step,
                                        rank=rank(), world_size=world_size(), group_ids=groups)
        # A private generator: creating the loader must not draw from the global RNG that `fit` seeds.
        # It seeds the loader's workers, which must differ between ranks (rank 0 keeps the seed of a
        # single-process run).
        generator = torch.Generator().manual_seed(rank_seed(seed + start_step))
        return iter(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_detection,
                               num_workers=num_workers, persistent_workers=num_workers > 0,
                               generator=generator))
    return make


def detector_from_config(model: ModelConfig, num_classes: int) -> nn.Module:
    """build_detector with the config's model section as keyword arguments."""
    fields = dataclasses.asdict(model)
    return build_detector(fields.pop("kind"), fields.pop("backbone"), num_classes=num_classes, **fields)


def load_detector(checkpoint: str | Path, *, model_keys: dict[str, Any] | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a detector from a checkpoint's own config and class list, then load its weights.

    model_keys: model config keys the user gave (see `inference_settings`).
    """
    tensors, meta = load_checkpoint(checkpoint)
    return detector_from_checkpoint(tensors, meta, source=checkpoint, model_keys=model_keys), meta


def detector_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any], *,
                             source: str | Path, model_keys: dict[str, Any] | None = None) -> nn.Module:
    """The detector a checkpoint's tensors and metadata (as load_checkpoint returns them) describe.

    model_keys: model config keys the user gave for eval or predict; see `inference_settings`.
    """
    if "config" not in meta or "classes" not in meta:
        raise ConfigError(f"{source}: checkpoint has no config/classes metadata")
    config = config_from_dict(meta["config"], source=str(source))
    config.model.weights = config.model.backbone_weights = None  # the checkpoint already holds them
    settings = inference_settings(model_keys or {}, dataclasses.asdict(config.model), checkpoint=source)
    model = detector_from_config(dataclasses.replace(config.model, **settings), len(meta["classes"]))
    model.load_state_dict(tensors, strict=True)
    return model


def inference_settings(model_keys: dict[str, Any], saved: dict[str, Any], *, checkpoint: str | Path
                       ) -> dict[str, Any]:
    """Of the model keys given to eval or predict, those that differ from the checkpoint's `saved` ones.

    The checkpoint fixes the architecture, so a key of INFERENCE_KEYS is applied and any other
    that differs is refused: silently ignoring it would report another model than the one asked for.
    """
    changed = {key: value for key, value in model_keys.items() if value != saved.get(key)}
    fixed = sorted(set(changed) - set(INFERENCE_KEYS))
    if fixed:
        key = fixed[0]
        raise ConfigError(f"model.{key}: {checkpoint} holds a model with {key} {saved.get(key)!r}, not "
                          f"{changed[key]!r}; its architecture is fixed, only "
                          f"{', '.join('model.' + k for k in INFERENCE_KEYS)} can be changed for it")
    return changed


def zoo_model_config(model: ModelConfig, architecture: str, *, key: str) -> ModelConfig:
    """`model`'s image size and settings for the zoo builder `architecture`, set up for loaded weights,
    with no weights file named (key: the config key that named the architecture, for errors)."""
    spec = zoo_architecture(architecture, key=key)
    return dataclasses.replace(model, kind=spec.kind, architecture=architecture, pretrained_setup=True,
                               weights=None, backbone_weights=None)


def zoo_detector_from_file(model: ModelConfig, architecture: str, num_classes: int, weights: str | Path, *,
                           key: str) -> nn.Module:
    """A torchvision zoo detector with `model`'s image size and settings, every tensor from `weights`.

    It is set up as torchvision sets up its pretrained models (frozen batch norm, with torchvision's
    eps), so a zoo file gives the outputs it gives in torchvision. Every tensor must load: a model
    that kept part of its random initialisation, its box predictor say, would no longer be the file's.

    Args:
        key: the config key that named the architecture, for error messages.
    """
    detector = detector_from_config(zoo_model_config(model, architecture, key=key), num_classes)
    load_detector_weights(detector, Path(weights), strict=True)
    return detector


def class_metadata(dataset) -> dict[str, Any]:
    """What a checkpoint stores about labels, so predictions map back to the dataset's categories."""
    meta: dict[str, Any] = {"classes": list(dataset.classes)}
    if hasattr(dataset, "category_ids"):
        meta["category_ids"] = list(dataset.category_ids)
    return meta


def primary_metric(config: Config) -> str:
    """The metric that picks the best checkpoint: COCO AP, or VOC mAP."""
    return "mAP" if config.data.format == "voc" else "AP"
