"""Typed experiment config: dataclasses loaded from flat YAML, with dotted `--set` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tardistill.errors import ConfigError

ON_BAD_SAMPLE = ("error", "skip")


def check_on_bad_sample(policy: str) -> str:
    """Return `policy` if it is a known data.on_bad_sample value, else raise ConfigError."""
    if policy not in ON_BAD_SAMPLE:
        raise ConfigError(f"data.on_bad_sample: unknown policy '{policy}' (valid: {', '.join(ON_BAD_SAMPLE)})")
    return policy


@dataclass
class DataConfig:
    """Where the data lives and how it is augmented."""

    format: str = "synth"  # coco | voc | synth
    # The dataset folder. coco: ROOT/<split>/ images, ROOT/annotations/instances_<split>.json (or
    # <split>.json); voc: a VOCdevkit year folder; synth: what `tardistill data synth` wrote.
    root: str = "data/synth"
    train_split: str = "train"  # split names: COCO image folders and JSON files, VOC ImageSets/Main files
    val_split: str = "val"  # picks the best checkpoint
    test_split: str = "test"  # scored once, after training
    classes: list[str] | None = None  # VOC class names; None means the 20 VOC classes
    flip: bool = True  # training only: random horizontal flip
    jitter: bool = True  # training only: random brightness, contrast, saturation and hue
    num_workers: int = 0  # DataLoader worker processes; 0 loads in the training process
    # What a bad annotation record or an image that cannot be loaded does: stop the run (error)
    # or leave the sample out and report it at the end (skip). See docs/RELIABILITY.md.
    on_bad_sample: str = "error"

    def __post_init__(self) -> None:
        check_on_bad_sample(self.on_bad_sample)


@dataclass
class ModelConfig:
    """Detector architecture; field names match `build_detector`'s keyword arguments."""

    kind: str = "faster_rcnn"  # faster_rcnn | retinanet
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | resnet101 | mobilenet_v3_large
    # A torchvision model-zoo builder (models/zoo.py: fasterrcnn_resnet50_fpn_v2, ...). It fixes the
    # backbone, FPN, head and anchors; backbone, width_multiplier, fpn_channels, head_width and
    # anchor_sizes then go unused. None builds this project's detector from `backbone`.
    architecture: str | None = None
    # For a zoo architecture: torchvision's set-up for loaded weights (frozen batch norm in the v1
    # and MobileNet models, frozen first backbone stages). None means "when weights or
    # backbone_weights is set"; it is resolved on loading, so a saved run rebuilds the same model
    # after its weight files are gone.
    pretrained_setup: bool | None = None
    width_multiplier: float = 1.0  # ResNet only: every stage's width times this (narrow students)
    fpn_channels: int = 256  # channels of every FPN level
    head_width: int = 1024  # Faster R-CNN: width of the two fully connected layers of the box head
    # Images are resized so the short side is min_size, unless the long side would exceed max_size.
    min_size: int = 128
    max_size: int = 128
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # px, one per FPN level
    # RetinaNet only: p3_p7 (the paper's) or p2_p6 (stride 4 first, as Faster R-CNN: small objects
    # get several positive anchors).
    retinanet_levels: str = "p3_p7"
    # RetinaNet only: none (torchvision's v1 head) or group (GroupNorm after each head conv, as its
    # v2 head; trains from scratch much faster).
    head_norm: str = "none"
    # Faster R-CNN: region proposals kept per image and level before NMS, and per image after it,
    # in training and at test time.
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256  # Faster R-CNN: anchors sampled per image for the RPN loss
    box_batch_size_per_image: int = 512  # Faster R-CNN: RoIs sampled per image for the box head loss
    detections_per_image: int = 100  # at most this many detections per image, the highest scores
    score_threshold: float = 0.05  # detections scoring lower are dropped
    weights: str | None = None  # local file with full detector weights
    backbone_weights: str | None = None  # local file with ImageNet backbone weights

    def __post_init__(self) -> None:
        if self.architecture and self.pretrained_setup is None:
            self.pretrained_setup = bool(self.weights or self.backbone_weights)


@dataclass
class TrainConfig:
    """Optimisation schedule, logging and checkpoint cadence."""

    iterations: int = 3000  # optimizer steps
    batch_size: int = 8  # images per step (per process under torchrun)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.02  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4
    warmup_iterations: int = 200  # linear warm-up from warmup_factor x lr to lr
    warmup_factor: float = 0.001
    schedule: str = "multistep"  # multistep | cosine
    milestones: list[float] = field(default_factory=lambda: [0.75, 0.9])  # fractions of iterations
    gamma: float = 0.1  # multistep: the learning rate is multiplied by gamma at each milestone
    clip_grad_norm: float = 10.0  # 0 disables clipping
    amp: str = "auto"  # auto | bf16 | off
    device: str = "auto"  # auto | cpu | cuda
    # Steps between validations, which pick best.safetensors; the last step always validates.
    # 0: never, and the final weights are scored.
    eval_every: int = 500
    checkpoint_every: int = 250  # steps between the training states that --resume continues from
    log_every: int = 20  # steps between metrics.jsonl records
    # A step whose loss or gradients are NaN or inf stops the run (false) or is skipped without an
    # optimizer update and counted in the result (true).
    skip_nonfinite: bool = False


@dataclass
class DistillConfig:
    """Distillation terms; see METHOD.md. Used by `tardistill distill`.

    method: tar | fitnet | fgfi | chen2017 | fgd | none (the student alone). The weights, beta,
    truncate, tau and the gates are TAR's; a baseline uses its paper's values (BASELINE_DEFAULTS
    in distill/baseline_losses.py). sharing applies to every Faster R-CNN method.
    decay: auto (linear for tar, the paper's constant weight for a baseline) or a schedule that
    then applies to any method: linear | constant | cosine | step | exp.
    """

    teacher: str | None = None  # a tardistill checkpoint, or a weights file with teacher_architecture
    # A teacher from torchvision's model zoo: its builder, and its class list (names without the
    # background, or "coco" for torchvision's COCO weights); `teacher` is then a local weights file
    # (.pth or .safetensors, read safely). See docs/PRETRAINED.md.
    teacher_architecture: str | None = None
    teacher_classes: list[str] | str | None = None
    # Student class name -> teacher class (name or label), or a YAML file holding that mapping:
    # distills a teacher trained on another label set (distill/class_map.py).
    class_map: dict | str | None = None
    # Weights to start the student from: a tardistill checkpoint or a weights file (tensors of
    # another shape, such as another class count, keep their initialisation).
    student_checkpoint: str | None = None
    method: str = "tar"
    fpn_weight: float = 1.0
    cls_weight: float = 1.0
    reg_weight: float = 1.0
    beta: float = 0.5
    truncate: bool = True
    # Units of TAR's FPN term (docs/METHOD.md, "Loss units"): standard | channel_mean | sum.
    fpn_norm: str = "standard"
    tau: float = 1.0
    cls_gate: str = "adaptive"
    reg_gate: str = "teacher_better"
    sharing: str = "student"
    decay: str = "auto"
    decay_step_fraction: float = 0.5
    decay_gamma: float = 0.01


@dataclass
class Config:
    """One experiment."""

    seed: int = 0  # seeds Python, NumPy and torch: CPU runs repeat exactly
    name: str = "run"  # a label for the experiment, saved with the run's config
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (or start from defaults), then apply `a.b=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    return config_from_dict(raw, source=str(path) if path else "overrides")


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> Config:
    """Build a Config from nested dicts; unknown keys and wrong types raise ConfigError."""
    return _build(Config, raw, prefix="", source=source)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts, ready for YAML or JSON."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (saved beside every run's outputs)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def read_yaml_mapping(path: Path, *, context: str = "", missing: str = "config file not found",
                      expected: str = "a mapping at the top level", empty_ok: bool = True) -> dict[str, Any]:
    """The mapping in a YAML file ({} for an empty one when `empty_ok`).

    Every problem is a ConfigError that starts with `context` (e.g. the config key naming the
    file) and the path.
    """
    where = f"{context}{path}"
    if not path.is_file():
        raise ConfigError(f"{where}: {missing}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(err).split())}") from None
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected {expected}, got {type(raw).__name__}")
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.iterations=100")
    key, text = item.split("=", 1)
    # YAML parsing gives numbers, booleans, null and [lists] the same meaning as in the file.
    return key.strip(), yaml.safe_load(text) if text.strip() else ""


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, *, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (valid keys: {', '.join(sorted(known))})"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=f"{prefix}{name}.", source=source)
        else:
            values[name] = _coerce(value, hint, key=f"{prefix}{name}", source=source)
    return cls(**values)


def _coerce(value: Any, hint: Any, *, key: str, source: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key=key, source=source)
            except ConfigError:
                continue
        raise _type_error(value, hint, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(value, hint, key, source)
        (item_hint,) = typing.get_args(hint)
        return [_coerce(v, item_hint, key=f"{key}[{i}]", source=source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise _type_error(value, hint, key, source)
    if hint is int and isinstance(value, bool):
        raise _type_error(value, hint, key, source)
    if not isinstance(value, hint):
        raise _type_error(value, hint, key, source)
    return value


def _type_error(value: Any, hint: Any, key: str, source: str) -> ConfigError:
    wanted = getattr(hint, "__name__", str(hint))
    return ConfigError(f"{source}: key '{key}' expects {wanted}, got {value!r} ({type(value).__name__})")
