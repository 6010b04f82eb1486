"""Data-parallel runs under torchrun: the process group, rank queries and the few collectives runs need.

torchrun (or `python -m torch.distributed.run`) starts one process per device and tells each its
place through RANK, WORLD_SIZE and LOCAL_RANK, and where to meet through MASTER_ADDR/MASTER_PORT or
its rendezvous. Every helper here is a no-op in a single process, so a run started without torchrun
(or with one process) behaves exactly as before: no process group, no wrapper, no communication.
See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tardistill.engine.trainable import Trainable
from tardistill.errors import ConfigError

T = TypeVar("T")


# Offsets the seeds of ranks 1, 2, ...: their augmentation and RoI sampling draws must differ.
RANK_SEED_STRIDE = 1_000_000_007


def launched_by_torchrun() -> bool:
    """Whether the environment names this process as one of several ranks."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank from the environment; usable before the process group exists (logging)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def local_rank() -> int:
    """The index of this process on its node, which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0


def init_distributed() -> bool:
    """Join torchrun's process group (once); returns whether this process is one of several ranks."""
    if not launched_by_torchrun():
        return False
    if dist.is_initialized():
        return True
    backend = "gloo"
    if torch.cuda.is_available():
        check_one_gpu_per_process(local_rank(), torch.cuda.device_count())
        torch.cuda.set_device(local_rank())
        # NCCL for the CUDA tensors of gradient all-reduce; gloo for the small CPU objects and flags
        # (metrics, detections, checkpoints read on rank 0), which NCCL cannot carry.
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)  # env://: torchrun set the address, port, rank and world size
    return True


def check_one_gpu_per_process(local: int, gpus: int) -> None:
    """NCCL needs a GPU of its own for each process; CUDA's own error ("invalid device ordinal"), or
    NCCL's when two processes share one, does not say that torchrun started too many."""
    if local >= gpus:
        raise ConfigError(f"torchrun started process {local} on a node with {gpus} visible GPU(s): start at "
                          f"most one process per GPU (--nproc_per_node {gpus}), or set "
                          f"CUDA_VISIBLE_DEVICES= to train on CPU processes")


@contextmanager
def distributed_session() -> Iterator[None]:
    """Join the process group for the length of a run, when torchrun started this process."""
    started_here = launched_by_torchrun() and not dist.is_initialized()
    init_distributed()
    try:
        yield
    finally:
        if started_here and dist.is_initialized():
            dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process trains together with others (a process group of more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 logs, writes checkpoints and result.json, and scores evaluations."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """`seed` for this rank: unchanged on rank 0, so a single-process run keeps its seeds."""
    return seed + rank() * RANK_SEED_STRIDE


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_distributed():
        dist.barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's `value`, on every rank (picklable objects)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` run on rank 0 only, its result (or its exception) passed to every rank.

    For work only rank 0 does (scoring), and for reading files rank 0 wrote (checkpoints), which
    other nodes may not see: no shared file system is needed. An exception is raised on every
    rank, so that none waits for the others forever.
    """
    if not is_distributed():
        return fn(*args)
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, fn(*args))
        except Exception as error:  # noqa: BLE001 - re-raised below, on every rank
            outcome = (False, error)
    ok, value = broadcast_from_main(outcome)
    if not ok:
        raise value
    return value


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's `value`, in rank order, on rank 0; None on the other ranks."""
    if not is_distributed():
        return [value]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def all_gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one of them."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)])  # on the CPU: gloo carries it under either backend string
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(scalars: dict[str, float]) -> dict[str, float]:
    """Each scalar averaged over the ranks that report it: the loss of the global batch."""
    if not is_distributed():
        return scalars
    gathered = all_gather(scalars)
    names = dict.fromkeys(name for per_rank in gathered for name in per_rank)
    return {name: sum(s[name] for s in gathered if name in s) / sum(name in s for s in gathered)
            for name in names}


def wrap_for_training(model: Trainable, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel when several ranks train, else `model` itself.

    DDP all-reduces (averages) the gradients of what the optimizer trains: the student and, when
    distilling, the adapters and the method's modules. The model's frozen state (a Distiller's
    teacher) is loaded from the same file on every rank and never changes, so it is left out
    entirely: DDP neither broadcasts those weights and buffers nor waits for gradients they never get.
    """
    if not is_distributed():
        return model
    frozen = model.frozen_state_keys()
    if frozen:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(frozen))
    # find_unused_parameters=False: every trainable parameter takes part in every training
    # forward. A distillation term weighing 0 is not built at all (no adapters or modules without
    # an active term, see Distiller.needs); a term whose weight decays to 0 is still computed (0 x
    # term keeps it in the graph); torchvision's detectors run all their heads every step, and a
    # batch without positives still indexes into them. True would cost a walk over the autograd
    # graph every step; should a future part skip a step, DDP stops with an error at the next one.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)
