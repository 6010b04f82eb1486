"""PNG figures of the reproduction report, drawn from the records and each run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from tardistill.engine.run_log import read_run_log  # noqa: E402


def _label(record: dict) -> str:
    if record["method"] == "tar":
        return f"tar {record['variant']}"
    return {"none": "student alone"}.get(record["method"], record["method"])


def _series(run_dir: Path, kind: str, name: str) -> tuple[list[int], list[float]]:
    """One logged series of a run; empty when its folder is gone (a record imported from elsewhere)."""
    log_file = run_dir / "metrics.jsonl"
    if not log_file.is_file():
        return [], []
    rows = [r for r in read_run_log(log_file) if r["kind"] == kind and name in r]
    return [r["step"] for r in rows], [r[name] for r in rows]


def _save(figure, path: Path) -> Path:
    for axis in figure.axes:
        if axis.get_legend_handles_labels()[0]:  # a run group may have no finished runs yet
            axis.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_val_ap(records: list[dict], runs_dir: Path, path: Path) -> Path:
    """Validation AP against iteration, seed 0, one panel per dataset and detector with runs."""
    panels = sorted({(r.get("dataset", "synth"), r["detector"]) for r in records if r["method"] != "pretrain"})
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4.5), squeeze=False)
    for axis, (dataset, detector) in zip(axes[0], panels):
        for record in records:
            if (record.get("dataset", "synth"), record["detector"]) == (dataset, detector) and \
                    record["seed"] == 0 and record["group"] in ("reference", "main", "baselines", "retinanet"):
                steps, ap = zip(*record["val_curve"]) if record.get("val_curve") else ((), ())
                style = "--" if record["method"] == "teacher" else "-"
                axis.plot(steps, [100 * a for a in ap], style, marker="o", markersize=3, label=_label(record))
        axis.set(title=f"{dataset}, {detector}: validation AP (seed 0)", xlabel="iteration", ylabel="AP")
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_decay(records: list[dict], runs_dir: Path, path: Path) -> Path:
    """w(t) as logged by the runs of each decay form."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for record in records:
        if record["detector"] == "faster_rcnn" and record["seed"] == 0 and record.get("dataset", "synth") == "synth" and (
                record["variant"] in ("full", "full_linear_decay") or record["variant"].startswith("decay=")):
            steps, weight = _series(runs_dir / record["key"], "train", "stat/decay_w")
            axis.plot(steps, weight, label=_label(record))
    axis.set(title="distillation weight w(t)", xlabel="iteration", ylabel="w(t)")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_gate_rates(records: list[dict], runs_dir: Path, path: Path) -> Path:
    """Share of positive RoIs/anchors where the teacher was preferred, over training (seed 0)."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, stat in zip(axes, ("stat/cls_gate_rate", "stat/reg_gate_rate")):
        for record in records:
            if record["method"] == "tar" and record["seed"] == 0 and (
                    record["variant"] in ("full",) or "gate" in record["variant"]):
                steps, rate = _series(runs_dir / record["key"], "train", stat)
                if steps:
                    axis.plot(steps, rate, label=f"{record.get('dataset', 'synth')} {record['detector']} "
                              f"{_label(record)}", alpha=0.8)
        axis.set(title=f"{stat.removeprefix('stat/')} (teacher preferred)", xlabel="iteration",
                 ylabel="fraction of positives", ylim=(0, 1.05))
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_run_curves(runs: dict[str, tuple[Path, str]], path: Path) -> Path:
    """Validation AP against iteration, one line per run folder (`tardistill compare`).

    Args:
        runs: label -> (run folder, the metric to draw: AP, or mAP for VOC data).
    """
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, (run_dir, metric) in runs.items():
        steps, values = _series(run_dir, "val", metric)
        axis.plot(steps, [100 * v for v in values], marker="o", markersize=3, label=f"{label} ({metric})")
    axis.set(title="validation AP", xlabel="iteration", ylabel="AP (VOC: mAP)")
    axis.grid(alpha=0.3)
    return _save(figure, path)
