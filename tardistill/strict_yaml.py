"""YAML parsing that refuses what yaml.safe_load lets through silently: repeated keys and alias bombs.

Booleans are `true` and `false` only (YAML 1.2): YAML 1.1 also reads yes/no/on/off as booleans,
which turned the documented `train.amp: off` into False, a type error.

Config files and `--set` values are read by `parse_yaml`; config.read_yaml_mapping adds the file
handling. Every problem is a YAMLProblem with a one-line message.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# A real config holds a few hundred values; a billion-laughs file expands to billions. Between the
# two, the limit costs nothing and keeps a hostile file from exhausting memory.
MAX_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLProblem(ValueError):
    """A YAML text that cannot be read, or that reads ambiguously; the message is one line."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and bounds how far aliases expand."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise YAMLProblem(f"its aliases (*name) expand to more than {MAX_EXPANDED_NODES} values; "
                              "write the values out instead")
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(self, node)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _check_unique_keys(loader: _StrictLoader, node: yaml.MappingNode) -> None:
    """A key written twice would silently keep the last value, which is rarely what was meant."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *defaults` may be overridden key by key: not a repeat
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: SafeLoader's own error names it
            continue
        if repeated:
            raise YAMLProblem(f"line {key_node.start_mark.line + 1}: key '{key}' is given twice; keep one")


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many nodes `node` holds once every alias is expanded; linear in the distinct nodes."""
    if id(node) in sizes:
        if sizes[id(node)] is None:
            raise YAMLProblem(f"line {node.start_mark.line + 1}: an alias refers to a node that contains it")
        return sizes[id(node)]
    sizes[id(node)] = None  # in progress: meeting it again below means a cycle
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def parse_yaml(text: str) -> Any:
    """The value of a YAML document, as yaml.safe_load, but strict (see _StrictLoader)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise YAMLProblem(f"invalid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise YAMLProblem("invalid YAML: nested too deeply") from None
