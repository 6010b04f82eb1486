"""docs/CONFIG.md lists every config key and is what the generator writes from config.py today."""

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tardistill.config import Config
from tardistill.config_doc import REGENERATE, default_text, field_comments, render_config_doc

CONFIG_MD = Path(__file__).parents[1] / "docs" / "CONFIG.md"


def dotted_keys(cls=Config, prefix=""):
    """Every key a config file can set, walked from the dataclasses themselves."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from dotted_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_every_config_key_has_a_row():
    rows = {line.split("`")[1] for line in CONFIG_MD.read_text().splitlines() if line.startswith("| `")}
    missing = sorted(set(dotted_keys()) - rows)
    assert not missing, f"docs/CONFIG.md lacks {missing}; regenerate it: {REGENERATE}"
    assert "distill.student_checkpoint" in rows and "model.architecture" in rows


def test_config_md_is_up_to_date():
    assert CONFIG_MD.read_text() == render_config_doc(), f"docs/CONFIG.md is stale; regenerate it: {REGENERATE}"


@dataclass
class Example:
    plain: int = 1
    # the line above a field
    # and the next one
    commented: str | None = None  # and its end
    listed: list[int] = field(default_factory=lambda: [1, 2])  # a | b


def test_comments_above_and_at_the_end_of_a_field_are_its_description():
    assert field_comments(Example) == {"plain": ("int", ""),
                                       "commented": ("str | None", "the line above a field and the next one and its end"),
                                       "listed": ("list[int]", "a | b")}
    assert [default_text(f) for f in dataclasses.fields(Example)] == ["1", "null", "[1, 2]"]
