"""Errors a user can cause. The CLI prints each as one line and exits 1; nothing else is caught."""

from __future__ import annotations


class HpsearchError(Exception):
    """Base of every error that is the user's input, shown as one line without a traceback."""


class SpecError(HpsearchError):
    """A spec file that cannot be parsed or does not validate. The message names file, key, value."""


class DataError(HpsearchError):
    """A dataset that is missing, malformed, unsafe, or cannot be downloaded."""


class StoreError(HpsearchError):
    """A run directory that cannot be written or read."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM while a stage runs; `code` is the exit code (128 + signal)."""

    def __init__(self, code: int = 130, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
