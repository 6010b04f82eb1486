"""Errors that the CLI reports as one line, without a traceback."""


class TardistillError(Exception):
    """A user-facing problem: bad config, bad data, a missing file. The message is shown as is."""


class ConfigError(TardistillError):
    """A config key is unknown, mistyped or inconsistent."""


class DataError(TardistillError):
    """A dataset file is missing, unreadable or malformed. The message names the file."""


class StorageError(TardistillError):
    """A file or folder cannot be written: not a folder, read-only, disk full. The message names it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, Slurm, Kubernetes), raised like Ctrl-C so a run saves its state on the way out."""


class SampleSkipped(DataError):
    """An evaluation image that failed to load was left out under `data.on_bad_sample: skip`.

    The evaluator catches it and scores without that image; the dataset has already dropped the
    image from its ground truth.
    """


class NonFiniteLossError(TardistillError):
    """A training step produced a NaN or inf loss or gradient. The message names the term and step."""
