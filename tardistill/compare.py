"""`tardistill compare`: runs side by side, from what every run folder holds.

A run folder (train or distill --out) holds config.yaml, metrics.jsonl (validation metrics under
kind "val"), result.json (test metrics and parameters, once finished) and best.safetensors (or
final.safetensors). Any such folders compare, not only the benchmark's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tardistill.config import load_config
from tardistill.engine.run_log import read_run_log
from tardistill.engine.setup import primary_metric
from tardistill.errors import TardistillError

COLUMNS = {"test_ap": "test AP", "test_ap50": "test AP50", "val_ap": "val AP", "val_ap50": "val AP50",
           "val_step": "at step", "params_M": "params (M)", "cpu_ms": "CPU ms (batch 1)"}


def summarize_run(run_dir: Path, *, latency_repeats: int = 10) -> dict[str, Any]:
    """One row: test and best-validation AP and AP50, parameters, and CPU latency (None: not known).

    AP is COCO's AP; on VOC data AP50 is VOC mAP (AP at IoU 0.5) and AP is None. Validation is
    the step with the best primary metric, as the best checkpoint was picked. latency_repeats 0
    skips the latency, the only number measured now rather than read.
    """
    if not (run_dir / "metrics.jsonl").is_file():
        raise TardistillError(f"{run_dir}: not a run folder (no metrics.jsonl)")
    metric = primary_metric(load_config(run_dir / "config.yaml"))
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").is_file() else {}
    test, val = result.get("test_metrics", {}), _best_validation(run_dir, metric)
    row = {"run": str(run_dir), "metric": metric, "test_ap": test.get("AP"), "test_ap50": _ap50(test),
           "val_ap": val.get("AP"), "val_ap50": _ap50(val), "val_step": val.get("step"),
           "params_M": result["parameters"] / 1e6 if "parameters" in result else None, "cpu_ms": None}
    checkpoint = next((run_dir / n for n in ("best.safetensors", "final.safetensors") if (run_dir / n).is_file()),
                      None)
    if checkpoint is not None and (latency_repeats or row["params_M"] is None):
        row.update(_measure(checkpoint, latency_repeats))
    return row


def _ap50(metrics: dict[str, Any]) -> float | None:
    return metrics.get("AP50", metrics.get("mAP"))  # VOC's mAP is AP at IoU 0.5


def _best_validation(run_dir: Path, metric: str) -> dict[str, Any]:
    """The validation record with the best `metric` ({} when the run never validated)."""
    records = [r for r in read_run_log(run_dir / "metrics.jsonl") if r["kind"] == "val" and metric in r]
    return max(records, key=lambda r: r[metric], default={})


def _measure(checkpoint: Path, latency_repeats: int) -> dict[str, float]:
    """Parameters of a checkpoint's detector and, unless latency_repeats is 0, its CPU latency at batch 1."""
    from tardistill.engine.setup import load_detector
    from tardistill.models.build import count_parameters
    from tardistill.models.profile import cpu_latency_ms

    detector, meta = load_detector(checkpoint)
    measured = {"params_M": count_parameters(detector) / 1e6}
    if latency_repeats:
        measured["cpu_ms"] = cpu_latency_ms(detector, image_size=meta["config"]["model"]["max_size"],
                                            repeats=latency_repeats)
    return measured


def compare_runs(run_dirs: list[Path], *, plot: Path | None, latency_repeats: int = 10) -> list[dict[str, Any]]:
    """A row per run (see summarize_run), and a PNG of validation AP against iteration at `plot`."""
    rows = [summarize_run(run_dir, latency_repeats=latency_repeats) for run_dir in run_dirs]
    if plot is not None:
        from tardistill.bench.plots import plot_run_curves

        plot_run_curves({row["run"]: (Path(row["run"]), row["metric"]) for row in rows}, plot)
    return rows


def format_comparison(rows: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The rows as a text or markdown table: AP in percent, '-' where a number is missing."""
    from tardistill.metrics import format_table

    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or value == -1:
            return "-"  # COCO's -1: no objects of that size
        if key in ("test_ap", "test_ap50", "val_ap", "val_ap50"):
            return f"{100 * value:.1f}"
        return str(value) if key == "val_step" else f"{value:.2f}" if key == "params_M" else f"{value:.1f}"

    body = [[row["run"], *(cell(key, row[key]) for key in COLUMNS)] for row in rows]
    return format_table(["run", *COLUMNS.values()], body, markdown=markdown)
