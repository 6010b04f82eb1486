"""Strict JSON: no NaN or Infinity, each null with what it was; files written whole or not at all."""

import json
import math

import pytest

from tardistill.strict_json import without_nonfinite, write_json


def test_nonfinite_numbers_become_null_with_their_key():
    clean, nulls = without_nonfinite({"a": 1.5, "b": {"c": math.nan, "d": [0.0, -math.inf]}, "e": "x"})
    assert clean == {"a": 1.5, "b": {"c": None, "d": [0.0, None]}, "e": "x"}
    assert nulls == {"b.c": "nan (not a JSON number)", "b.d[1]": "-inf (not a JSON number)"}


def test_write_json_refuses_nan_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"AP": 0.5})
    with pytest.raises(ValueError):
        write_json(path, {"AP": math.nan})
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no partial file left
