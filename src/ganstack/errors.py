"""User-facing errors.

Every error a user can cause (a bad path, a config typo, a corrupt file) is raised as a
:class:`GanstackError` whose message says what was wrong and what to do. The CLI prints the
message on one line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class GanstackError(Exception):
    """An error caused by input the user can fix; the message says how."""


class ConfigError(GanstackError):
    """A configuration value or key is invalid."""


class DataError(GanstackError):
    """A dataset path is missing, empty, corrupt or of the wrong shape."""


class CheckpointError(GanstackError):
    """A checkpoint is missing, incomplete or does not match the model."""


class NonFiniteLossError(GanstackError):
    """A training loss became NaN or Inf (``train.nan_policy`` says what the trainer does)."""


class MissingDependencyError(GanstackError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'ganstack[{extra}]'  (or: pip install {package})"
        )
        self.package = package
        self.extra = extra


class RunLockedError(GanstackError):
    """Another process is writing to the run directory (it holds the directory's lock)."""
