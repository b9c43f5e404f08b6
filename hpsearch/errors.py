"""Errors a user can cause. The CLI prints each as one line and exits 1; nothing else is caught."""

from __future__ import annotations

from pathlib import Path


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none): what a
    one-line error quotes of a library's exception."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


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


def interrupt_exit_code(e: KeyboardInterrupt) -> int:
    """What a stopped command exits with: 128 + the signal (143: SIGTERM), or 130 for a plain
    KeyboardInterrupt (Ctrl-C)."""
    return e.code if isinstance(e, Interrupted) else 130


class StageStopped(Interrupted):
    """A stage stopped by Ctrl-C or SIGTERM: finished trials are on disk, running ones recorded as
    interrupted; `--resume` continues it."""

    def __init__(self, code: int, stage_dir: Path, finished: int, total: int, final: bool = False) -> None:
        if final:  # hpsearch final: runs, each scored once; none is scored again on --resume
            saved = f"{finished} of {total} runs finished and saved in {stage_dir} (each scored once, in its ledger)"
        else:
            saved = f"{finished} of {total} trials finished and saved in {stage_dir} (ranked in its results.md)"
        super().__init__(code, saved)
        self.stage_dir, self.finished, self.total = stage_dir, finished, total


class NothingToResume(HpsearchError):
    """`refine --resume` with no interrupted stage: a notice, not a failure (exit code 0)."""


class OptionError(HpsearchError, ValueError):
    """A keyword argument of the Python API (hpsearch.api) with a value it cannot take; the message
    names the argument and the value. (The CLI's options are checked by typer.)"""


class NothingToTrain(HpsearchError):
    """`hpsearch.refine` whose every planned configuration was already trained at its budget: no
    stage was written. (The CLI says so and exits 0.)"""
