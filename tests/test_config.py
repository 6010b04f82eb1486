"""Config loading: typed values, dotted overrides, and errors that name the key."""

import pytest
import yaml

from tardistill.config import Config, load_config, save_config
from tardistill.errors import ConfigError


def write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_required_keys_exist():
    config = load_config(None)
    assert isinstance(config, Config)
    assert config.data.format in ("coco", "voc", "synth")
    assert isinstance(config.data.root, str)
    assert isinstance(config.train.iterations, int) and isinstance(config.train.batch_size, int)
    assert isinstance(config.seed, int)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, {"seed": 3, "train": {"iterations": 10, "lr": 1}, "data": {"format": "voc"}})
    config = load_config(path, ["train.batch_size=4", "model.anchor_sizes=[4,8]", "data.classes=[a,b]"])
    assert config.seed == 3 and config.train.iterations == 10 and config.train.batch_size == 4
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)  # int accepted for float
    assert config.model.anchor_sizes == [4, 8] and config.data.classes == ["a", "b"]
    assert config.data.format == "voc"


@pytest.mark.parametrize("data, key", [
    ({"trian": {"iterations": 1}}, "trian"),
    ({"train": {"iteration": 1}}, "train.iteration"),
])
def test_unknown_key_is_named(tmp_path, data, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("override, key", [
    ("train.iterations=ten", "train.iterations"),
    ("train.iterations=1.5", "train.iterations"),
    ("data.flip=3", "data.flip"),
    ("model.anchor_sizes=[8,x]", "model.anchor_sizes[1]"),
])
def test_wrong_type_is_named(override, key):
    with pytest.raises(ConfigError, match=f"key '{key.replace('[', '.').replace(']', '.')}'"):
        load_config(None, [override])


def test_malformed_yaml_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(path)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.iterations"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["train.iterations=7", "distill.teacher=t.safetensors"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def _numeric_fields():
    """(dotted key, field) of every int, float or list-of-numbers key of the config."""
    import dataclasses
    import typing

    numeric = (int, float, list[int], list[float])
    sections = {"": Config, **{f"{name}.": hint for name, hint in typing.get_type_hints(Config).items()
                               if dataclasses.is_dataclass(hint)}}
    for prefix, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in numeric:
                yield f"{prefix}{f.name}", f


def test_every_numeric_key_has_a_range_that_holds_its_default():
    fields = dict(_numeric_fields())
    assert {"seed", "train.lr", "train.iterations", "model.min_size", "distill.fpn_weight"} <= set(fields)
    missing = [key for key, f in fields.items() if "range" not in f.metadata]
    assert not missing, f"numeric keys without a range: {missing}"
    config = load_config(None)
    for key, f in fields.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(config, section) if section else config, name)
        assert all(v in f.metadata["range"] for v in (value if isinstance(value, list) else [value])), key


@pytest.mark.parametrize("override, message", [
    ("train.lr=-0.1", "key 'train.lr' must be > 0, got -0.1"),
    ("train.batch_size=0", "key 'train.batch_size' must be >= 1, got 0"),
    ("train.iterations=0", "key 'train.iterations' must be >= 1, got 0"),
    ("train.iterations=-5", "key 'train.iterations' must be >= 1, got -5"),
    ("model.min_size=-5", "key 'model.min_size' must be in [32, 4096], got -5"),
    ("model.min_size=30000", "key 'model.min_size' must be in [32, 4096], got 30000"),
    ("train.momentum=1", "key 'train.momentum' must be in [0, 1), got 1.0"),
    ("model.score_threshold=.nan", "key 'model.score_threshold' must be in [0, 1], got nan"),
    ("train.clip_grad_norm=.inf", "key 'train.clip_grad_norm' must be >= 0, got inf"),
    ("model.anchor_sizes=[8,0,32]", "key 'model.anchor_sizes[1]' must be >= 1, got 0"),
    ("distill.tau=0", "key 'distill.tau' must be > 0, got 0.0"),
    ("seed=-1", "key 'seed' must be in [0, 4294967295], got -1"),
])
def test_a_number_out_of_range_is_one_line_naming_key_and_range(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert str(caught.value) == f"overrides: {message}"


def test_a_range_is_checked_in_the_file_too(tmp_path):
    with pytest.raises(ConfigError, match=r"exp.yaml: key 'train.log_every' must be >= 1, got 0"):
        load_config(write(tmp_path, {"train": {"log_every": 0}}))


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="exp.yaml: the file is empty"):
        load_config(path)
    path.write_text("{}\n")  # the way to ask for every default
    assert load_config(path) == Config()


def test_a_key_given_twice_is_an_error_naming_it(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 0.1\n  iterations: 5\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="exp.yaml: line 4: key 'lr' is given twice"):
        load_config(path)


def test_a_bad_override_value_is_one_line():
    with pytest.raises(ConfigError, match=r"--set model.anchor_sizes=\[8, 16: invalid YAML"):
        load_config(None, ["model.anchor_sizes=[8, 16"])


def test_saved_config_leaves_omitted_keys_at_their_defaults(tmp_path):
    config = load_config(None, ["train.iterations=7", "distill.method=fgd"])
    save_config(config, tmp_path / "config.yaml", omit=("distill.fpn_weight", "train.lr"))
    text = (tmp_path / "config.yaml").read_text()
    assert "fpn_weight" not in text and "\n  lr:" not in text
    assert load_config(tmp_path / "config.yaml") == config
