"""docs/CONFIG.md, generated from the config dataclasses: every key, its type, default and comment.

The comments are those written in config.py: the comment lines just above a field and the comment
at the end of its line. Regenerate after changing config.py:

    python -m tardistill.config_doc > docs/CONFIG.md

tests/test_config_doc.py fails while docs/CONFIG.md is stale.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any

import yaml

from tardistill.config import Config

REGENERATE = "python -m tardistill.config_doc > docs/CONFIG.md"


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """{field name: (its type as written, its comment)} from the source of a dataclass."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    fields = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign):
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):  # a block of comment lines
            above.insert(0, comments[line])
            line -= 1
        at_end = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        fields[node.target.id] = (ast.unparse(node.annotation), " ".join(above + at_end))
    return fields


def default_text(field: dataclasses.Field) -> str:
    """A field's default as it would be written in the YAML file."""
    value = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("...\n").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def section_table(cls: type, prefix: str, names: list[str] | None = None) -> list[str]:
    """A markdown table of a dataclass's fields (or of `names` among them): key, type, default, comment."""
    comments = field_comments(cls)
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        if names is None or field.name in names:
            annotation, comment = comments[field.name]
            rows.append(f"| `{prefix}{field.name}` | `{_cell(annotation)}` | `{_cell(default_text(field))}` "
                        f"| {_cell(comment)} |")
    return rows


def render_config_doc() -> str:
    """The whole of docs/CONFIG.md."""
    hints = typing.get_type_hints(Config)
    sections = [f for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])]
    top_level = [f.name for f in dataclasses.fields(Config) if f not in sections]
    lines = ["# Config reference", "",
             "Every key of a tardistill config file, with its type, default and meaning. Generated from the "
             "dataclasses in `tardistill/config.py`; edit those, then regenerate:", "",
             "```bash", REGENERATE, "```", "",
             "A config file is flat YAML with these sections. Any key can be overridden on the command line "
             "with `--set section.key=value`; unknown keys and wrong types are refused. Booleans are `true` or "
             "`false` (YAML 1.1's yes, no, on and off are read as words).", "",
             "## Top level", "", *section_table(Config, "", top_level)]
    for field in sections:
        cls: Any = hints[field.name]
        lines += ["", f"## `{field.name}`", "", inspect.getdoc(cls), "", *section_table(cls, f"{field.name}.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_config_doc(), end="")
