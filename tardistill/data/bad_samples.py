"""The `data.on_bad_sample` policy: stop at the first bad record (error) or skip it and say why (skip).

One `BadSamples` object belongs to one dataset. The readers hand every bad record and every image
that fails to load to `reject`, which raises under 'error' and remembers the reason under 'skip'.
Problems with a file as a whole (malformed JSON or XML, bad categories, a missing split file) stop
the run under either policy: there is nothing sensible left to skip to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from tardistill.config import check_on_bad_sample
from tardistill.errors import DataError, SampleSkipped

log = logging.getLogger(__name__)
# Training targets carry the reasons for images replaced while loading them (see `load_sample`):
# a loader worker's BadSamples lives in another process, so the reasons travel with the batch.
SKIPPED_KEY = "skipped"
# A result file lists this many reasons at most; the count is always exact.
MAX_REASONS = 100
# A broken export can have thousands of bad records: log the first few, the result has the rest.
MAX_LOGGED = 10


class BadSamples:
    """The policy of one dataset, and the reasons for what it skipped, each reason counted once."""

    def __init__(self, policy: str = "error") -> None:
        self.policy = check_on_bad_sample(policy)
        self.reasons: list[str] = []
        self._seen: set[str] = set()

    def reject(self, error: DataError) -> None:
        """Raise `error` under 'error'; under 'skip' log it (once per reason) and remember it."""
        if self.policy == "error":
            raise error
        message = str(error)
        # A broken image is met again every epoch; it is one skipped sample, not one per epoch.
        if message in self._seen:
            return
        self._seen.add(message)
        self.reasons.append(message)
        if len(self.reasons) <= MAX_LOGGED:
            log.warning("skipped: %s", message)
        if len(self.reasons) == MAX_LOGGED:
            log.warning("further skipped samples are not logged one by one; the run's result lists them")


def load_sample(load: Callable[[int], tuple], index: int, size: int, bad: BadSamples, *,
                substitute: bool, forget: Callable[[int], None]) -> tuple:
    """`load(index)`, with images that fail to load handled by the dataset's policy.

    Under 'skip', a failed image is dropped from the ground truth (`forget`). In training
    (`substitute`) the next loadable image takes its place, so batches keep their size and stay
    deterministic; the target lists the reasons under SKIPPED_KEY. In evaluation SampleSkipped
    tells the evaluator to go on without it.
    """
    try:
        return load(index)
    except DataError as error:
        bad.reject(error)  # raises under 'error'
        forget(index)
        reasons = [str(error)]
    if not substitute:
        raise SampleSkipped(reasons[0])
    for offset in range(1, size):
        candidate = (index + offset) % size
        try:
            image, target = load(candidate)
        except DataError as error:
            bad.reject(error)
            forget(candidate)
            reasons.append(str(error))
            continue
        return image, {**target, SKIPPED_KEY: tuple(reasons)}
    raise DataError(f"no image of the dataset could be loaded; the first problem: {reasons[0]}")


def pop_skipped(targets: Iterable[dict]) -> list[str]:
    """Remove and return the reasons that `load_sample` attached to a batch's targets."""
    return [reason for target in targets for reason in target.pop(SKIPPED_KEY, ())]


def merge_reasons(*groups: Iterable[str]) -> list[str]:
    """The distinct reasons of several groups, in order of first appearance."""
    return list(dict.fromkeys(reason for group in groups for reason in group))


def skipped_report(reasons: list[str]) -> dict:
    """What a run's result says about skipped samples: the exact count and the first reasons."""
    return {"count": len(reasons), "reasons": reasons[:MAX_REASONS]}
