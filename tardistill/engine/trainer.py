"""`fit`: the iteration-based training loop shared by detector training and distillation."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tardistill.data.bad_samples import merge_reasons, pop_skipped
from tardistill.engine.distributed import (all_gather, any_rank, barrier, is_main, mean_over_ranks, rank_seed,
                                           run_on_main, wrap_for_training)
from tardistill.engine.run_log import RunLog
from tardistill.engine.schedule import lr_factor
from tardistill.engine.trainable import LossModule, Trainable
from tardistill.errors import NonFiniteLossError, TardistillError
from tardistill.models.checkpoint import (flatten_optimizer_state, load_checkpoint, save_checkpoint,
                                          unflatten_optimizer_state)

log = logging.getLogger(__name__)
TRAIN_STATE = "last_state.safetensors"


def precision_context(amp: bool, device: torch.device):
    """The context a training forward runs in: bf16 autocast when `amp`, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


class PrefixedLosses(LossModule):
    """Wraps a torchvision detector so its training losses come back as `det/<name>`, each weighing 1."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        return {f"det/{k}": v for k, v in self.detector(images, targets).items()}


@dataclass
class Schedule:
    """What `fit` needs to know about the optimisation schedule."""

    iterations: int
    schedule: str = "multistep"
    warmup_iterations: int = 0
    warmup_factor: float = 0.001
    milestones: tuple[float, ...] = (0.75, 0.9)
    gamma: float = 0.1
    clip_grad_norm: float = 0.0

    def factor(self, step: int) -> float:
        return lr_factor(step, total_steps=self.iterations, schedule=self.schedule,
                         warmup_steps=self.warmup_iterations, warmup_factor=self.warmup_factor,
                         milestones=self.milestones, gamma=self.gamma)


@dataclass
class Hooks:
    """Callbacks that make `fit` usable for plain training and for distillation alike.

    evaluate: returns validation metrics for the deployable model (detector or student).
    save_model: writes the deployable model to a path with extra metadata.
    """

    evaluate: Callable[[], dict[str, float]] | None = None
    save_model: Callable[[Path, dict[str, Any]], None] | None = None
    primary_metric: str = "AP"


def fit(model: Trainable, make_batches: Callable[[int], Any], optimizer: torch.optim.Optimizer, schedule: Schedule, *,
        out_dir: Path, hooks: Hooks, device: torch.device, amp: bool = False, start: dict[str, Any] | None = None,
        log_every: int = 20, eval_every: int = 0, checkpoint_every: int = 0, seed: int = 0,
        skip_nonfinite: bool = False) -> dict[str, Any]:
    """Train `model` (whose forward returns a flat loss dict; see `Trainable`) for `schedule.iterations` steps.

    Under torchrun (see engine/distributed.py) every rank calls `fit` alike: the model trains in
    DistributedDataParallel, `make_batches` yields this rank's share of each global batch, and only
    rank 0 logs and writes checkpoints; the others wait for it before returning.

    Args:
        make_batches: start_step -> iterator of (images, targets) from that step on, so a resumed
            run sees the batches it would have seen (see ResumableBatchSampler).
        start: the trainer state to continue, from `start_state` (None: a fresh run).
        skip_nonfinite: skip a step whose loss or gradients are NaN or inf, instead of stopping.
    Returns:
        {"step", "best_metric", "best_step", "wall_s", "skipped_steps" (non-finite steps skipped),
        "skipped_samples" (reasons for training images replaced under data.on_bad_sample: skip)}.
    """
    main = is_main()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    state = start if start is not None else start_state(out_dir, model, optimizer, resume=False)
    # What runs the forward: DDP around `model` under torchrun, `model` itself otherwise.
    forward = wrap_for_training(model, device)
    # The step of the training state on disk (a resumed run starts from one), named if a NaN stops the run.
    saved_step = state["step"] or None
    base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = lr
    run_log = RunLog(out_dir, start_step=state["step"]) if main else NoRunLog()
    model.train()
    bar = tqdm(total=schedule.iterations, initial=state["step"], desc="train", dynamic_ncols=True,
               disable=None if main else True)
    started = time.perf_counter() - state["wall_s"]
    try:
        stream = make_batches(state["step"])
        while state["step"] < schedule.iterations:
            step = state["step"]
            # Augmentation and RoI sampling draw from torch's global RNG: seeding it from (seed, step)
            # makes every step reproducible, including after an interruption and --resume. Each rank
            # draws its own numbers (rank 0 those of a single-process run).
            torch.manual_seed(rank_seed(seed * 1_000_003 + step))
            images, targets = next(stream)
            state["skipped_samples"] = merge_reasons(state["skipped_samples"], pop_skipped(targets))
            scalars = _train_step(model, images, targets, optimizer, schedule, base_lrs, step=step,
                                  device=device, amp=amp, skip_nonfinite=skip_nonfinite, forward=forward)
            state["step"] = step + 1
            state["wall_s"] = time.perf_counter() - started
            bar.update(1)
            if scalars is None:
                state["skipped_steps"] += 1
            else:
                _report(scalars, state["step"], schedule.iterations, run_log, bar, log_every)
            _maybe_evaluate(state, hooks, run_log, out_dir, model, eval_every, schedule.iterations)
            if checkpoint_every and state["step"] % checkpoint_every == 0:
                if main:
                    _save_train_state(out_dir / TRAIN_STATE, model, optimizer, state)
                saved_step = state["step"]
    except NonFiniteLossError as error:
        # The weights that produced a NaN may be broken already: saving them would overwrite the
        # last good training state, which --resume needs.
        raise NonFiniteLossError(f"{error}; {_last_good_state(out_dir, saved_step)}") from None
    except BaseException:
        # Keep completed work: an interrupted or failed run can continue with --resume.
        if state["step"] > 0 and main:
            _save_train_state(out_dir / TRAIN_STATE, model, optimizer, state)
            log.error("training stopped at step %d; state saved to %s (use --resume)",
                      state["step"], out_dir / TRAIN_STATE)
        raise
    finally:
        bar.close()
        run_log.close()
    # Training images replaced on any rank (data.on_bad_sample: skip), in the result of every rank.
    state["skipped_samples"] = merge_reasons(*all_gather(state["skipped_samples"]))
    if main:
        _save_train_state(out_dir / TRAIN_STATE, model, optimizer, state)
        if hooks.save_model is not None:
            hooks.save_model(out_dir / "final.safetensors", {"step": state["step"], "wall_s": state["wall_s"]})
    barrier()  # every rank returns once rank 0's files are complete
    if state["skipped_steps"] and main:
        log.warning("%d of %d steps were skipped for a non-finite loss or gradient",
                    state["skipped_steps"], state["step"])
    return state


def start_state(out_dir: Path, model, optimizer, *, resume: bool) -> dict[str, Any]:
    """A fresh trainer state, or the saved one (model and optimizer restored) when resuming.

    Under torchrun rank 0 reads the saved state and passes it to the others, whose nodes need not
    see rank 0's files.
    """
    state = {"step": 0, "best_metric": -math.inf, "best_step": -1, "wall_s": 0.0, "skipped_steps": 0,
             "skipped_samples": []}
    saved = run_on_main(_read_train_state, out_dir / TRAIN_STATE) if resume else None
    if saved is not None:
        # Merged into the fresh state, so a state saved before a key existed still resumes.
        state.update(_restore(saved, out_dir / TRAIN_STATE, model, optimizer))
        log.info("resumed from %s at step %d", out_dir / TRAIN_STATE, state["step"])
    return state


def _read_train_state(path: Path):
    """(tensors, meta) of a saved training state, or None when there is none."""
    return load_checkpoint(path) if path.is_file() else None


def _last_good_state(out_dir: Path, saved_step: int | None) -> str:
    if saved_step is None:
        return "no training state was saved yet"
    # A resumed run replays the same batches and seeds, so it needs a change to get past the NaN.
    return (f"the last good training state is step {saved_step} in {out_dir / TRAIN_STATE}; continue from "
            f"it with --resume --set train.skip_nonfinite=true")


def _report(scalars: dict[str, float], step: int, total_steps: int, run_log: RunLog, bar, log_every: int) -> None:
    """Progress bar, metrics.jsonl every `log_every` steps, and a log line when there is no terminal."""
    bar.set_postfix(_console_scalars(scalars))
    if step % log_every == 0 or step == total_steps:
        run_log.write(step, scalars)
        if bar.disable and is_main():  # no terminal (a background run): a log line stands in for the bar
            log.info("step %d/%d %s", step, total_steps,
                     " ".join(f"{k}={v}" for k, v in _console_scalars(scalars).items()))


def _train_step(model, images, targets, optimizer, schedule: Schedule, base_lrs, *, step, device, amp,
                skip_nonfinite=False, forward=None):
    """One optimizer update, or None for a step skipped for a NaN or inf (with `skip_nonfinite`).

    Without `skip_nonfinite` a NaN or inf raises NonFiniteLossError before the weights change.
    `forward` runs the forward (the DDP wrapper of `model` under torchrun); `model` weighs the
    losses. The scalars returned are averaged over the ranks: those of the global batch.
    """
    factor = schedule.factor(step)
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    with precision_context(amp, device):
        losses = (forward or model)(images, targets)
    total, weights = model.weighted_total(losses, step, schedule.iterations)
    try:
        _check_finite_losses_on_all_ranks(losses, total, step)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        _clip_and_check_gradients(optimizer, schedule.clip_grad_norm, step)
    except NonFiniteLossError as error:
        if not skip_nonfinite:
            raise
        optimizer.zero_grad(set_to_none=True)
        log.warning("%s; step skipped (train.skip_nonfinite)", error)
        return None
    optimizer.step()
    scalars = {k: float(v.detach()) for k, v in losses.items()}
    scalars.update({k: float(v) for k, v in weights.items() if k.startswith("stat/")})
    scalars.update(loss=float(total.detach()), lr=optimizer.param_groups[0]["lr"])
    return mean_over_ranks(scalars)


def _check_finite_losses_on_all_ranks(losses: dict[str, torch.Tensor], total: torch.Tensor, step: int) -> None:
    """`_check_finite_losses`, agreed by every rank: all skip or stop together, none waits in backward."""
    try:
        _check_finite_losses(losses, total, step)
    except NonFiniteLossError:
        any_rank(True)
        raise
    if any_rank(False):
        raise NonFiniteLossError(f"step {step + 1}: a loss term is not finite on another rank")


def _check_finite_losses(losses: dict[str, torch.Tensor], total: torch.Tensor, step: int) -> None:
    """Name the first loss term that is NaN or inf (stat/* are statistics, not losses)."""
    if torch.isfinite(total):
        return
    for name, value in losses.items():
        if not name.startswith("stat/") and not torch.isfinite(value.detach()).all():
            raise NonFiniteLossError(f"step {step + 1}: loss term {name} is {float(value.detach().sum())}")
    raise NonFiniteLossError(f"step {step + 1}: the weighted total loss is {float(total)}")


def _clip_and_check_gradients(optimizer, clip_grad_norm: float, step: int) -> None:
    """Clip gradients to `clip_grad_norm` (0: no clipping); a NaN or inf gradient norm raises."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # clip_grad_norm_ in two halves, so that the norm is checked before it scales anything.
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if not torch.isfinite(norm):
        raise NonFiniteLossError(f"step {step + 1}: the gradient norm is {float(norm)}")
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, clip_grad_norm, norm)


def _console_scalars(scalars: dict[str, float]) -> dict[str, str]:
    """Total loss, lr, and every distillation term, weight and gate rate, formatted short."""
    shown = {"loss": f"{scalars['loss']:.3f}", "lr": f"{scalars['lr']:.2e}"}
    for name, value in scalars.items():
        if name.startswith(("kd/", "stat/")):
            shown[name.split("/", 1)[1]] = f"{value:.3g}"
    return shown


class NoRunLog:
    """The run log of ranks other than 0, which write nothing."""

    def write(self, step: int, scalars: dict[str, float], *, kind: str = "train") -> None:
        pass

    def close(self) -> None:
        pass


def _maybe_evaluate(state, hooks: Hooks, run_log: RunLog, out_dir: Path, model, eval_every, total_steps):
    step = state["step"]
    if hooks.evaluate is None or not eval_every or (step % eval_every and step != total_steps):
        return
    metrics = hooks.evaluate()  # on every rank: each detects on its shard (engine/evaluator.py)
    model.train()
    run_log.write(step, metrics, kind="val")
    value = metrics.get(hooks.primary_metric, -math.inf)
    if is_main():
        log.info("step %d: val %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if value > state["best_metric"]:
        state.update(best_metric=value, best_step=step)
        if hooks.save_model is not None and is_main():
            hooks.save_model(out_dir / "best.safetensors", {"step": step, "val_metrics": metrics})


def training_state_dict(model: Trainable) -> dict[str, torch.Tensor]:
    """What training must restore: everything but the frozen state (a teacher, reloaded from its file)."""
    frozen = model.frozen_state_keys()
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def _save_train_state(path: Path, model, optimizer, state) -> None:
    optim_tensors, optim_rest = flatten_optimizer_state(optimizer.state_dict())
    tensors = {f"model/{k}": v for k, v in training_state_dict(model).items()}
    tensors.update(optim_tensors)
    save_checkpoint(path, tensors, {"trainer": state, "optimizer": optim_rest})


def _restore(saved, path: Path, model, optimizer) -> dict[str, Any]:
    """Load the model and optimizer state saved by `_save_train_state` (`saved`, read from `path`);
    returns the trainer state."""
    tensors, meta = saved
    model_state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    advice = f"resume with the config the run started with ({path.parent / 'config.yaml'})"
    try:
        missing, unexpected = model.load_state_dict(model_state, strict=False)
        frozen = model.frozen_state_keys()
        missing = [k for k in missing if k not in frozen]
        if missing or unexpected:
            raise TardistillError(f"{path}: does not match the model (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}); {advice}")
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as err:  # torch's size mismatch spans many lines
        detail = " ".join(str(err).split()) or type(err).__name__
        raise TardistillError(f"{path}: does not fit this config's model ({detail[:300]}); {advice}") from None
    return dict(meta["trainer"])
