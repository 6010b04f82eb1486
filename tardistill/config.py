"""Typed experiment config: dataclasses loaded from flat YAML, with dotted `--set` overrides."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tardistill.errors import ConfigError
from tardistill.strict_yaml import YAMLProblem, parse_yaml

ON_BAD_SAMPLE = ("error", "skip")
# Image sides the detector resizes to: below 32 px the FPN's coarsest levels vanish; above 4096 px
# one image's feature maps alone take gigabytes (30000 px asks for 10.8 GB).
IMAGE_SIDE = (32, 4096)


@dataclass(frozen=True)
class Range:
    """Where a numeric config value (or each number of a list) must lie; None leaves that side open.

    A value outside it, NaN or infinity stops the config from loading, with one line naming the key.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above_low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below_high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above_low and below_high

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


# Field metadata that gives a numeric config key its valid range (read by the config builder).
def at_least(low: float) -> dict[str, Range]:
    return {"range": Range(low)}


def above(low: float) -> dict[str, Range]:
    return {"range": Range(low, low_open=True)}


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> dict[str, Range]:
    return {"range": Range(low, high, low_open=low_open, high_open=high_open)}


def check_range(value: float, bounds: Range, name: str) -> float:
    """`value` if it lies in `bounds`, else a ConfigError: "<name> must be <range>, got <value>"."""
    if value not in bounds:
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return value


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
    # DataLoader worker processes; 0 loads in the training process
    num_workers: int = field(default=0, metadata=at_least(0))
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
    # ResNet only: every stage's width times this (narrow students)
    width_multiplier: float = field(default=1.0, metadata=above(0))
    fpn_channels: int = field(default=256, metadata=at_least(1))  # channels of every FPN level
    # Faster R-CNN: width of the two fully connected layers of the box head
    head_width: int = field(default=1024, metadata=at_least(1))
    # Images are resized so the short side is min_size, unless the long side would exceed max_size.
    min_size: int = field(default=128, metadata=between(*IMAGE_SIDE))
    max_size: int = field(default=128, metadata=between(*IMAGE_SIDE))
    # px, one per FPN level
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256], metadata=at_least(1))
    # RetinaNet only: p3_p7 (the paper's) or p2_p6 (stride 4 first, as Faster R-CNN: small objects
    # get several positive anchors).
    retinanet_levels: str = "p3_p7"
    # RetinaNet only: none (torchvision's v1 head) or group (GroupNorm after each head conv, as its
    # v2 head; trains from scratch much faster).
    head_norm: str = "none"
    # Faster R-CNN: region proposals kept per image and level before NMS, and per image after it,
    # in training and at test time.
    rpn_pre_nms_top_n_train: int = field(default=2000, metadata=at_least(1))
    rpn_post_nms_top_n_train: int = field(default=2000, metadata=at_least(1))
    rpn_pre_nms_top_n_test: int = field(default=1000, metadata=at_least(1))
    rpn_post_nms_top_n_test: int = field(default=1000, metadata=at_least(1))
    # Faster R-CNN: anchors sampled per image for the RPN loss
    rpn_batch_size_per_image: int = field(default=256, metadata=at_least(1))
    # Faster R-CNN: RoIs sampled per image for the box head loss
    box_batch_size_per_image: int = field(default=512, metadata=at_least(1))
    # at most this many detections per image, the highest scores
    detections_per_image: int = field(default=100, metadata=at_least(1))
    # detections scoring lower are dropped
    score_threshold: float = field(default=0.05, metadata=between(0, 1))
    weights: str | None = None  # local file with full detector weights
    backbone_weights: str | None = None  # local file with ImageNet backbone weights

    def __post_init__(self) -> None:
        if self.architecture and self.pretrained_setup is None:
            self.pretrained_setup = bool(self.weights or self.backbone_weights)


@dataclass
class TrainConfig:
    """Optimisation schedule, logging and checkpoint cadence."""

    iterations: int = field(default=3000, metadata=at_least(1))  # optimizer steps
    batch_size: int = field(default=8, metadata=at_least(1))  # images per step (per process under torchrun)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = field(default=0.02, metadata=above(0))  # peak learning rate
    momentum: float = field(default=0.9, metadata=between(0, 1, high_open=True))  # SGD momentum
    weight_decay: float = field(default=1e-4, metadata=at_least(0))
    # linear warm-up from warmup_factor x lr to lr
    warmup_iterations: int = field(default=200, metadata=at_least(0))
    warmup_factor: float = field(default=0.001, metadata=between(0, 1))
    schedule: str = "multistep"  # multistep | cosine
    # fractions of iterations
    milestones: list[float] = field(default_factory=lambda: [0.75, 0.9], metadata=between(0, 1))
    # multistep: the learning rate is multiplied by gamma at each milestone
    gamma: float = field(default=0.1, metadata=between(0, 1, low_open=True))
    clip_grad_norm: float = field(default=10.0, metadata=at_least(0))  # 0 disables clipping
    amp: str = "auto"  # auto | bf16 | off
    device: str = "auto"  # auto | cpu | cuda
    # Steps between validations, which pick best.safetensors; the last step always validates.
    # 0: never, and the final weights are scored.
    eval_every: int = field(default=500, metadata=at_least(0))  # 0: only at the end
    # steps between the training states that --resume continues from
    checkpoint_every: int = field(default=250, metadata=at_least(0))
    log_every: int = field(default=20, metadata=at_least(1))  # steps between metrics.jsonl records
    # A step whose loss or gradients are NaN or inf stops the run (false) or is skipped without an
    # optimizer update and counted in the result (true).
    skip_nonfinite: bool = False


@dataclass
class DistillConfig:
    """Distillation terms; see METHOD.md. Used by `tardistill distill`.

    method: a name in distill/methods/registry.py METHODS: tar, none (the student alone) or a
    method TAR is compared with (docs/METHODS.md). method_options: that method's hyper-parameters
    over its paper's defaults (the fields of its class); an option it does not have is an error.
    The flat weights, beta, truncate, fpn_norm, fpn_tau, tau and gates are TAR's options: with another
    method they must keep their defaults (distill/pair.py). sharing applies to every Faster R-CNN
    method. decay: auto (the method's own: constant for tar and the others; docs/METHOD.md says why TAR
    ships without the paper's decay) or a schedule that then applies to any method: linear | constant | cosine | step | exp.
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
    method_options: dict = field(default_factory=dict)
    fpn_weight: float = field(default=100.0, metadata=at_least(0))
    cls_weight: float = field(default=3.0, metadata=at_least(0))
    reg_weight: float = field(default=1.0, metadata=at_least(0))
    beta: float = field(default=4.0, metadata=above(0))
    truncate: bool = False
    # Units of TAR's FPN term (docs/METHOD.md, "Loss units"):
    # standard | channel_mean | sum | channel_softmax | standard_softmax | level_softmax | pyramid_softmax.
    fpn_norm: str = "pyramid_softmax"
    # Softmax temperature of the softmax units (channel_, standard_, level_ and pyramid_softmax; the
    # KL is multiplied by its square, as CWD's); must stay at its default with the squared-distance units.
    fpn_tau: float = field(default=0.7, metadata=above(0))
    tau: float = field(default=1.0, metadata=above(0))
    cls_gate: str = "adaptive"
    reg_gate: str = "teacher_better"
    sharing: str = "student"
    decay: str = "auto"
    decay_step_fraction: float = field(default=0.5, metadata=between(0, 1))
    decay_gamma: float = field(default=0.01, metadata=between(0, 1, low_open=True))


@dataclass
class Config:
    """One experiment: its seed, name and data, model, train and distill sections (docs/CONFIG.md)."""

    # seeds Python, NumPy and torch: CPU runs repeat exactly
    seed: int = field(default=0, metadata=between(0, 2**32 - 1))
    name: str = "run"  # a label for the experiment, saved with the run's config
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (or start from defaults), then apply `a.b=value` overrides."""
    return config_from_dict(_raw_config(path, overrides), source=str(path) if path else "overrides")


def as_config(config: Config | str | Path) -> Config:
    """`config` itself, or the Config of the YAML file at that path."""
    return config if isinstance(config, Config) else load_config(config)


def override_keys(overrides: list[str] | tuple[str, ...], section: str) -> list[str]:
    """The keys of `section` that `--set` overrides name."""
    raw = _raw_config(None, overrides).get(section, {})
    return sorted(raw) if isinstance(raw, dict) else []


def _raw_config(path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    return raw


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> Config:
    """Build a Config from nested dicts; unknown keys and wrong types raise ConfigError."""
    return _build(Config, raw, prefix="", source=source)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts, ready for YAML or JSON."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path, *, omit: tuple[str, ...] = ()) -> None:
    """Write the resolved config as YAML (saved beside every run's outputs).

    omit: dotted keys left out of the file (it then reads them at their defaults).
    """
    settings = config_to_dict(config)
    for dotted in omit:
        *parents, last = dotted.split(".")
        section = settings
        for name in parents:
            section = section[name]
        del section[last]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(settings, sort_keys=False))


def read_yaml_mapping(path: Path, *, context: str = "", missing: str = "config file not found",
                      expected: str = "a mapping at the top level ({} runs on the defaults)") -> dict[str, Any]:
    """The mapping in a YAML file, read strictly (strict_yaml.parse_yaml); an empty file is refused.

    Every problem is a ConfigError that starts with `context` (e.g. the config key naming the
    file) and the path.
    """
    where = f"{context}{path}"
    if not path.is_file():
        raise ConfigError(f"{where}: {missing}")
    try:
        raw = parse_yaml(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: cannot read ({err})") from None
    except YAMLProblem as err:
        raise ConfigError(f"{where}: {err}") from None
    if raw is None:  # nothing but comments, or nothing at all: most likely the wrong file
        raise ConfigError(f"{where}: the file is empty; expected {expected}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected {expected}, got {type(raw).__name__}")
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.iterations=100")
    key, text = item.split("=", 1)
    if not text.strip():
        return key.strip(), ""
    # YAML parsing gives numbers, booleans, null and [lists] the same meaning as in the file.
    try:
        return key.strip(), parse_yaml(text)
    except YAMLProblem as err:
        raise ConfigError(f"--set {item}: {err}") from None


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
    bounds = {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=f"{prefix}{name}.", source=source)
        else:
            values[name] = _coerce(value, hint, key=f"{prefix}{name}", source=source)
            if name in bounds:
                _check_numbers(values[name], bounds[name], key=f"{prefix}{name}", source=source)
    return cls(**values)


def check_value(value: Any, hint: Any, *, key: str, source: str = "config") -> Any:
    """`value` checked against a type hint as config values are (an int is accepted for a float);
    ConfigError naming `key` if it does not fit."""
    return _coerce(value, hint, key=key, source=source)


def _check_numbers(value: Any, bounds: Range, *, key: str, source: str) -> None:
    """The range check of a number, or of each number of a list; None (an unset option) passes."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_range(item, bounds, f"{source}: key '{key}[{index}]'")
    elif value is not None:
        check_range(value, bounds, f"{source}: key '{key}'")


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
    advice = " (write true or false)" if hint is bool else ""
    return ConfigError(f"{source}: key '{key}' expects {wanted}{advice}, got {value!r} ({type(value).__name__})")
