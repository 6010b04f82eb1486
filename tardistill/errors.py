"""Errors that the CLI reports as one line, without a traceback."""


class TardistillError(Exception):
    """A user-facing problem: bad config, bad data, a missing file. The message is shown as is."""


class ConfigError(TardistillError):
    """A config key is unknown, mistyped or inconsistent."""


class DataError(TardistillError):
    """A dataset file is missing, unreadable or malformed. The message names the file."""
