"""End-to-end runs: train a detector from a Config, evaluate a checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tardistill.config import Config, as_config, config_to_dict, save_config
from tardistill.data.bad_samples import merge_reasons, skipped_report
from tardistill.data.loader import check_splits_agree
from tardistill.distill.pair import idle_tar_keys
from tardistill.engine.distributed import init_distributed, is_main, run_on_main
from tardistill.engine.evaluator import evaluate
from tardistill.engine.schedule import build_optimizer
from tardistill.engine.setup import (batch_stream, class_metadata, dataset_for, detector_from_checkpoint,
                                     detector_from_config, primary_metric, seed_everything, select_device,
                                     use_bf16)
from tardistill.engine.run_folder import claimed_run_folder, has_saved_state, run_files_in
from tardistill.engine.trainable import Trainable
from tardistill.engine.trainer import Hooks, PrefixedLosses, Schedule, fit, start_state
from tardistill.errors import ConfigError
from tardistill.models.build import count_parameters
from tardistill.models.checkpoint import load_checkpoint, save_model
from tardistill.strict_json import without_nonfinite, write_json

log = logging.getLogger(__name__)


def schedule_from_config(config: Config) -> Schedule:
    """The trainer's view of `config.train`."""
    train = config.train
    return Schedule(iterations=train.iterations, schedule=train.schedule,
                    warmup_iterations=train.warmup_iterations, warmup_factor=train.warmup_factor,
                    milestones=tuple(train.milestones), gamma=train.gamma, clip_grad_norm=train.clip_grad_norm)


def make_hooks(config: Config, detector: torch.nn.Module, val_set, base_meta: dict[str, Any],
               device: torch.device) -> Hooks:
    """Validation and saving of the deployable model, shared by `train` and `distill`."""
    def run_validation() -> dict[str, float]:
        return evaluate(detector, val_set, batch_size=config.train.batch_size, device=device)

    def save(path: Path, extra: dict[str, Any]) -> None:
        save_model(path, detector, {**base_meta, **extra})

    return Hooks(evaluate=run_validation, save_model=save, primary_metric=primary_metric(config))


def train_detector(config: Config, out_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train one detector; writes config.yaml, metrics.jsonl, best/final checkpoints and result.json."""
    seed_everything(config.seed)
    train_set = dataset_for(config.data, config.data.train_split, train=True)
    detector = detector_from_config(config.model, len(train_set.classes))
    return run_training(config, PrefixedLosses(detector), detector, train_set, out_dir,
                        meta={"role": "detector"}, resume=resume)


def train(config: Config | str | Path, out: str | Path, *, resume: bool = False,
          overwrite: bool = False) -> dict[str, Any]:
    """Train the detector of `config` (a Config or a YAML path) into the run folder `out`, as
    `tardistill train` does; returns result.json's content (test_metrics, checkpoint, ...).

    resume: continue the saved state in `out`. overwrite: move a run already in `out` aside first.
    """
    return run_and_test(as_config(config), Path(out), train_detector, resume=resume, overwrite=overwrite)


def run_and_test(config: Config, out: Path, runner: Callable[..., dict[str, Any]], *, resume: bool = False,
                 overwrite: bool = False, check: Callable[[Config], object] | None = None) -> dict[str, Any]:
    """Claim the run folder `out` (see engine/run_folder.py), train with `runner`, score on test.

    runner: train_detector or distill_student. resume: continue the saved state in `out`, which
    must exist. overwrite: move a run already in `out` aside first. check: what the run reads
    before it trains (default: read_splits), run before a run is moved aside.
    """
    if overwrite and not resume and run_files_in(out):
        # --overwrite moves the old run aside; a new run whose inputs are broken must not cost the
        # user the old run's place, so they are checked before anything moves.
        (check or read_splits)(config)
    with claimed_run_folder(out, resume=resume, overwrite=overwrite):
        return finish_run(config, out, runner(config, out, resume=resume))


def read_splits(config: Config, train_set=None) -> dict[str, Any]:
    """The train, val and test splits of `config`, checked to share one class list.

    train_set: the training split when the caller has built it already.
    """
    splits = {"train": train_set if train_set is not None else
              dataset_for(config.data, config.data.train_split, train=True),
              "val": dataset_for(config.data, config.data.val_split, train=False),
              "test": dataset_for(config.data, config.data.test_split, train=False)}
    check_splits_agree(splits)
    return splits


def continue_or_start(config: Config, out: Path, runner: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """run_and_test in a folder a tool owns (demo, bench reproduce): continue a saved state, or start
    over, moving aside the files of a run that stopped before its first checkpoint."""
    resume = has_saved_state(out)
    return run_and_test(config, out, runner, resume=resume, overwrite=not resume)


def run_training(config: Config, model: Trainable, detector: torch.nn.Module, train_set,
                 out_dir: Path, *, meta: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train `model` (a loss-dict module, see `Trainable`) and validate/save `detector`, the deployable part of it.

    Nothing is written to `out_dir` before the data of every split and the state to resume from
    have been checked. Under torchrun every rank runs this alike (see engine/distributed.py);
    config.train.batch_size is per rank, so a step trains on batch_size x world size images.
    """
    init_distributed()  # a no-op without torchrun, or once the CLI has joined the process group
    device = select_device(config.train.device)
    val_set = read_splits(config, train_set)["val"]  # test is read again by finish_run
    model.to(device)
    meta = {"config": config_to_dict(config), **class_metadata(train_set), **meta}
    optimizer = build_optimizer(model.trainable_parameters(), config.train.optimizer, lr=config.train.lr,
                                momentum=config.train.momentum, weight_decay=config.train.weight_decay)
    start = start_state(out_dir, model, optimizer, resume=resume)
    if is_main():
        save_config(config, out_dir / "config.yaml",
                    omit=tuple(f"distill.{key}" for key in idle_tar_keys(config.distill)))
    batches = batch_stream(train_set, batch_size=config.train.batch_size, seed=config.seed,
                           num_workers=config.data.num_workers)
    state = fit(model, batches, optimizer, schedule_from_config(config), out_dir=out_dir,
                hooks=make_hooks(config, detector, val_set, meta, device), device=device,
                amp=use_bf16(config.train.amp, device), start=start, log_every=config.train.log_every,
                eval_every=config.train.eval_every, checkpoint_every=config.train.checkpoint_every,
                seed=config.seed, skip_nonfinite=config.train.skip_nonfinite)
    skipped = merge_reasons(train_set.bad_samples.reasons, state["skipped_samples"],
                            val_set.bad_samples.reasons)
    return {**state, "skipped_samples": skipped, "parameters": count_parameters(detector)}


def evaluate_checkpoint(config: Config, checkpoint: Path, *, split: str, dataset=None,
                        model_keys: dict[str, Any] | None = None) -> dict[str, float]:
    """Metrics of a saved detector on one split (or on `dataset`, already built from that split).

    model_keys: model config keys the user gave, applied or refused (setup.inference_settings).
    Under torchrun rank 0 reads the checkpoint for every rank and each evaluates its shard.
    """
    device = select_device(config.train.device)
    tensors, meta = run_on_main(load_checkpoint, checkpoint)
    detector = detector_from_checkpoint(tensors, meta, source=checkpoint, model_keys=model_keys)
    dataset = dataset if dataset is not None else dataset_for(config.data, split, train=False)
    check_same_classes(meta["classes"], dataset.classes, checkpoint)
    return evaluate(detector.to(device), dataset, batch_size=config.train.batch_size, device=device)


def check_same_classes(model_classes: list[str], data_classes: list[str], checkpoint: Path) -> None:
    """A model can only be scored on data with the class list it was trained on."""
    if list(model_classes) != list(data_classes):
        raise ConfigError(f"{checkpoint}: model classes {model_classes} differ from the dataset's {data_classes}")


def finish_run(config: Config, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Score the best checkpoint (picked on val) on the test split and write result.json."""
    best = out / "best.safetensors"
    checkpoint = best if run_on_main(best.is_file) else out / "final.safetensors"
    test_set = dataset_for(config.data, config.data.test_split, train=False)
    test_metrics = evaluate_checkpoint(config, checkpoint, split=config.data.test_split, dataset=test_set)
    skipped = skipped_report(merge_reasons(state.get("skipped_samples", []), test_set.bad_samples.reasons))
    result = json_ready({**state, "checkpoint": str(checkpoint), "test_metrics": test_metrics,
                         "skipped_samples": skipped})
    if not is_main():
        return result
    if skipped["count"]:
        log.warning("skipped %d bad samples (data.on_bad_sample: skip); all reasons are in %s, the first: %s",
                    skipped["count"], out / "result.json", " | ".join(skipped["reasons"][:3]))
    write_json(out / "result.json", result)
    return result


def json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """`result` as strict JSON holds it: NaN and infinities become null, and `null_reasons` says why."""
    clean, nulls = without_nonfinite(result)
    if "best_metric" in nulls and result.get("best_step", -1) < 0:
        nulls["best_metric"] = "no validation ran (train.eval_every: 0); the checkpoint is the final one"
    return {**clean, "null_reasons": nulls} if nulls else clean
