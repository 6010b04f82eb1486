"""README's "In your own training loop" runs exactly as written."""

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section_code(title: str) -> str:
    """The first ```python block under the README heading `## {title}`."""
    section = README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, f"README section {title!r} has no python code block"
    return match.group(1)


def test_own_training_loop_snippet_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippet writes data/tiny under the working directory
    exec(compile(readme_section_code("In your own training loop"), str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    losses = [float(value) for value in re.findall(r"^step \d: loss (\S+)$", out, flags=re.MULTILINE)]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert "'AP':" in out
    assert (tmp_path / "data" / "tiny" / "annotations" / "test.json").is_file()
