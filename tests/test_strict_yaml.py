"""Strict YAML: repeated keys and alias bombs are refused in one line; ordinary YAML reads as safe_load."""

import pytest
import yaml

from tardistill.strict_yaml import MAX_EXPANDED_NODES, YAMLProblem, parse_yaml

ORDINARY = """
base: &base {lr: 0.1, momentum: 0.9}
train:
  <<: *base
  lr: 0.2
sizes: &sizes [8, 16]
model: {anchor_sizes: *sizes}
"""


def test_ordinary_yaml_reads_as_safe_load_does():
    # A merge key overridden key by key is not a repeated key.
    assert parse_yaml(ORDINARY) == yaml.safe_load(ORDINARY)
    assert parse_yaml(ORDINARY)["train"] == {"lr": 0.2, "momentum": 0.9}


@pytest.mark.parametrize("text, message", [
    ("a: 1\nb: 2\na: 3\n", "line 3: key 'a' is given twice"),
    ("x:\n  y: [1, {z: 1, z: 2}]\n", "line 2: key 'z' is given twice"),
])
def test_a_repeated_key_is_refused(text, message):
    with pytest.raises(YAMLProblem, match=message):
        parse_yaml(text)


def test_an_alias_bomb_is_refused_before_it_expands():
    # Nine levels of ten aliases each: a billion values once expanded, a few hundred bytes as text.
    lines = ['l0: &l0 ["lol"]'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    with pytest.raises(YAMLProblem, match=f"expand to more than {MAX_EXPANDED_NODES} values"):
        parse_yaml("\n".join(lines))


def test_a_self_referencing_alias_and_deep_nesting_are_one_line():
    with pytest.raises(YAMLProblem, match="refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n")
    with pytest.raises(YAMLProblem, match="nested too deeply"):
        parse_yaml("[" * 5000 + "]" * 5000)


def test_only_true_and_false_are_booleans():
    """YAML 1.1's yes/no/on/off stay words, so `train.amp: off` is the string the option expects."""
    assert parse_yaml("[true, False, TRUE, off, on, yes, no]") == [True, False, True, "off", "on", "yes", "no"]


def test_amp_off_reads_from_a_file_and_from_set_and_a_bool_key_asks_for_true_or_false(tmp_path):
    from tardistill.config import load_config
    from tardistill.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("train:\n  amp: off\n")
    assert load_config(path).train.amp == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match=r"'data.flip' expects bool \(write true or false\), got 'no'"):
        load_config(None, ["data.flip=no"])
