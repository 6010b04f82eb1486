"""Scalars to a JSONL file and to TensorBoard, one record per logging step."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Appends {"step": t, name: value, ...} lines to metrics.jsonl and mirrors them to TensorBoard.

    A run resumed at `start_step` first drops the records of later steps: those of the steps done
    after the saved state, which the resumed run does again. So the log reads as one run.
    """

    def __init__(self, out_dir: Path, *, start_step: int = 0) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self.path.write_text("".join(f"{line}\n" for line in _lines_up_to(self.path, start_step)))
        self._file = self.path.open("a")
        self._writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step or None)

    def write(self, step: int, scalars: dict[str, float], *, kind: str = "train") -> None:
        record = {"step": step, "kind": kind, **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in scalars.items():
            self._writer.add_scalar(f"{kind}/{name}", float(value), step)

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def _lines_up_to(path: Path, step: int) -> list[str]:
    """The lines of an existing metrics.jsonl with records of steps up to `step` (none for step 0)."""
    if not step or not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return kept


def read_run_log(path: Path) -> list[dict]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
