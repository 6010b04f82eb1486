"""Scalars to a JSONL file and to TensorBoard, one record per logging step."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Appends {"step": t, name: value, ...} lines to metrics.jsonl and mirrors them to TensorBoard."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self._file = self.path.open("a")
        self._writer = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float], *, kind: str = "train") -> None:
        record = {"step": step, "kind": kind, **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in scalars.items():
            self._writer.add_scalar(f"{kind}/{name}", float(value), step)

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def read_run_log(path: Path) -> list[dict]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
