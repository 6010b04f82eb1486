"""A run's output folder: one process writes it at a time, and a run in it is never overwritten.

`claimed_run_folder` holds OUT for the length of a run. It refuses, in one line, a folder that
already holds a run (unless the run continues it with --resume, or moves it aside with
--overwrite), a --resume without a saved state, and a folder another process is writing.

The lock is OUT/.lock, held with flock: the kernel releases it when its process dies, even by
kill -9, so a lock left by a crashed run is taken over rather than blocking the folder for good.
The file names the holder (pid, host, start time) for the message a second process gets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from tardistill.engine.distributed import run_on_main
from tardistill.engine.trainer import TRAIN_STATE
from tardistill.errors import ConfigError, StorageError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
# What a run writes into its folder; any one of them means the folder holds a started run.
RUN_FILES = ("result.json", "final.safetensors", "best.safetensors", TRAIN_STATE, "metrics.jsonl",
             "config.yaml", "tensorboard")


def run_files_in(out: Path) -> list[str]:
    """The files of a started or finished run that `out` holds (empty: no run there)."""
    return [name for name in RUN_FILES if (out / name).exists()]


def has_saved_state(out: Path) -> bool:
    """Whether `out` holds a training state that --resume can continue."""
    return (out / TRAIN_STATE).is_file()


@contextmanager
def claimed_run_folder(out: Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[None]:
    """Hold `out` for this process while a run writes into it.

    Args:
        resume: continue the run in `out`; its saved training state must exist.
        overwrite: move a run already in `out` aside, to a sibling folder OUT.replaced-<time>.
    Under torchrun rank 0 claims the folder for every rank; a refusal is raised on each.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite moves it aside; choose one")
    held: list[_Lock] = []

    def claim() -> None:
        created = _make_folder(out)
        lock = _Lock(out, created=created)
        try:
            _check_contents(out, resume=resume, overwrite=overwrite)
        except BaseException:
            lock.release()
            raise
        held.append(lock)

    run_on_main(claim)
    try:
        yield
    finally:
        for lock in held:
            lock.release()


def _make_folder(out: Path) -> bool:
    """Create `out` if needed (True when created here); file-system problems are one line naming it."""
    if out.is_dir():
        return False
    if out.exists():
        raise StorageError(f"{out}: --out names a file, not a folder")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise StorageError(f"{out}: cannot create the run folder: {blocking} is a file")
    try:
        out.mkdir(parents=True)
    except OSError as err:
        raise StorageError(f"{out}: cannot create the run folder ({err.strerror or err})") from None
    return True


def _check_contents(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over a run (unless `overwrite`), and to resume one without a saved state."""
    present = run_files_in(out)
    if resume:
        if not has_saved_state(out):
            held = f" ({out} holds {', '.join(present)})" if present else ""
            raise ConfigError(f"--resume: no saved training state at {out / TRAIN_STATE}{held}; "
                              "run without --resume to start a new run")
        return
    if not present:
        return
    if overwrite:
        log.warning("%s: moved the run that was there to %s (--overwrite)", out, _move_aside(out, present))
        return
    kind = "a finished run" if "result.json" in present else "a started run"
    raise ConfigError(f"{out}: holds {kind} ({', '.join(present)}); continue it with --resume, "
                      "choose a new --out, or move it aside with --overwrite")


def _move_aside(out: Path, present: list[str]) -> Path:
    """Move a run's files into a new sibling folder of `out`, named after `out` and the time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        aside = out.with_name(f"{out.name}.replaced-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            aside.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise StorageError(f"{out}: no free name for moving the old run aside")
    for name in present:
        os.replace(out / name, aside / name)
    return aside


class _Lock:
    """OUT/.lock, held with flock by this process until `release`."""

    def __init__(self, out: Path, *, created: bool) -> None:
        self.out, self.path, self.created = out, out / LOCK_NAME, created
        self.fd = self._acquire()
        left_by = os.read(self.fd, 512).decode(errors="replace").strip()
        if left_by:  # a holder that ends normally empties the file: this one crashed
            log.warning("%s: taking over the lock of a run that no longer runs (%s)", out, left_by)
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now():%Y-%m-%d %H:%M:%S}"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, holder.encode(), 0)

    def _acquire(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise StorageError(f"{self.out}: cannot write in the run folder ({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise StorageError(f"{self.path}: cannot lock ({err.strerror or err})") from None
                raise ConfigError(f"{self.out}: in use by a run ({holder}); wait for it to end, or choose "
                                  "a new --out") from None
            # The holder may have released and removed the file between our open and our lock;
            # then we locked a file nobody else will see, and must try again.
            if _same_file(fd, self.path):
                return fd
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file (and the folder, if this run created it and left it empty)."""
        os.ftruncate(self.fd, 0)
        self.path.unlink(missing_ok=True)  # before closing: whoever opens it next makes a new one
        os.close(self.fd)
        if self.created:
            with contextlib.suppress(OSError):  # not empty (or gone): nothing to tidy
                self.out.rmdir()  # a refused or failed start leaves no empty folder behind


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
