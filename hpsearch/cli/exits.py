"""How a command ends. The exit codes (the README has the table): 0 success; 1 a user error (one line
on stderr, no traceback) or a sanity check FAILed; 2 wrong usage; 3 a stage in which no trial
completed (all failed or diverged: its results are still written); 4 --fail-under: the best accuracy
is below the bar; 5 --fail-on-edge: a range verdict says the optimum lies outside a searched range
(4 wins when both apply); 130 / 143 stopped by Ctrl-C / SIGTERM (finished trials saved, --resume
continues)."""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.text import Text

from hpsearch.cli.console import err
from hpsearch.errors import Interrupted, StageStopped

NO_TRIAL_COMPLETED = 3  # exit code of a stage in which every trial failed or diverged
BELOW_BAR = 4  # --fail-under: the best accuracy is below the bar
OUTSIDE_RANGE = 5  # --fail-on-edge: a verdict says the optimum lies outside a searched range


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt even where the shell started us ignoring SIGINT (a background
    job), and SIGTERM raises Interrupted(143), so a stage can record what was running and say how to
    resume. The previous handlers come back afterwards."""

    def on_term(signum: int, frame: object) -> None:
        _signals_seen.append(signum)
        raise Interrupted(128 + signum)

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


_signals_seen: list[int] = []  # SIGTERMs received: some libraries (Ray) re-raise a plain KeyboardInterrupt


def stopped(e: KeyboardInterrupt, resume_command: str) -> typer.Exit:
    """Exit 130 (Ctrl-C) or 143 (SIGTERM), saying what is saved and how to go on."""
    if _signals_seen:
        code = 128 + _signals_seen[-1]
    else:
        code = e.code if isinstance(e, Interrupted) else 130
    if isinstance(e, StageStopped):
        return fail(f"interrupted: {e.message}; resume with: {resume_command}", code=code)
    return fail("interrupted before any trial ran", code=code)


def resume_command(command: str, out_dir: Path | None, run_dir: Path | None) -> str:
    """The command line that continues this run: the user's own, with --out and --resume."""
    args = [a for a in sys.argv[1:] if a != "--resume"]
    if out_dir is None and run_dir is not None:
        args += ["--out", str(run_dir)]
    return shlex.join(["hpsearch", *args, "--resume"]) if args else f"hpsearch {command} --resume"
