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
