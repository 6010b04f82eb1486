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
