"""How a command ends. The exit codes (the README has the table): 0 success; 1 a user error (one line
on stderr, no traceback) or a sanity check FAILed; 2 wrong usage; 3 a stage in which no trial
completed (all failed or diverged: its results are still written); 4 --fail-under: the best accuracy
is below the bar; 5 --fail-on-edge: a range verdict says the optimum lies outside a searched range
(4 wins when both apply); 130 / 143 stopped by Ctrl-C / SIGTERM (finished trials saved, --resume
continues).

`guarded` is what every command runs in: it turns a known library error into exit 1 and Ctrl-C or
SIGTERM into 130 or 143, each with one line on stderr. A stage's command (coarse, refine, final)
renders its outcome after the guarded block: once the stage has returned, its results are written,
and an interruption there is not one that left trials to resume."""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.text import Text

from hpsearch.cli.console import err, note
from hpsearch.errors import HpsearchError, Interrupted, NothingToResume, StageStopped, interrupt_exit_code

NO_TRIAL_COMPLETED = 3  # exit code of a stage in which every trial failed or diverged
BELOW_BAR = 4  # --fail-under: the best accuracy is below the bar
OUTSIDE_RANGE = 5  # --fail-on-edge: a verdict says the optimum lies outside a searched range


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


@contextmanager
def guarded(resume: str | None = None, out_dir: Path | None = None) -> Iterator[None]:
    """Run a command's body: an HpsearchError exits 1 with its one line; NothingToResume is a notice
    (exit 0); Ctrl-C and SIGTERM exit 130 and 143 (`interrupt_code`), saying what is saved and, for a
    stage that `resume` names (coarse, refine, final), the command that continues it. `out_dir`: the
    run directory the user named (--out, or refine's and final's RUN), which the resume command keeps."""
    signals: list[int] = []
    try:
        with _interruptible(signals):
            yield
    except NothingToResume as e:
        note(str(e))
        raise typer.Exit() from None
    except HpsearchError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt as e:
        raise fail(_interrupted(e, resume, out_dir), code=interrupt_code(e, signals)) from None


@contextmanager
def _interruptible(signals: list[int]) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt even where the shell started us ignoring SIGINT (a background
    job), and SIGTERM raises Interrupted(143), so a stage can record what was running and say how to
    resume; each signal is appended to `signals`. The previous handlers come back afterwards, before
    the message is printed."""

    def on_term(signum: int, frame: object) -> None:
        signals.append(signum)
        raise Interrupted(128 + signum)

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def interrupt_code(e: KeyboardInterrupt, signals: list[int]) -> int:
    """130 after Ctrl-C, 143 after SIGTERM (128 + the signal). The signals the handler saw decide:
    some libraries (Ray) re-raise a SIGTERM as a plain KeyboardInterrupt."""
    if signals:
        return 128 + signals[-1]
    return interrupt_exit_code(e)


def _interrupted(e: KeyboardInterrupt, resume: str | None, out_dir: Path | None) -> str:
    if isinstance(e, StageStopped) and resume is not None:
        return f"interrupted: {e.message}; resume with: {resume_command(resume, out_dir, e.stage_dir.parent)}"
    return "interrupted before any trial ran" if resume is not None else "interrupted"


def resume_command(command: str, out_dir: Path | None, run_dir: Path | None) -> str:
    """The command line that continues this run: the user's own, with --out and --resume."""
    args = [a for a in sys.argv[1:] if a != "--resume"]
    if out_dir is None and run_dir is not None:
        args += ["--out", str(run_dir)]
    return shlex.join(["hpsearch", *args, "--resume"]) if args else f"hpsearch {command} --resume"
