"""What the tests share: the repository root, and the CLI run two ways.

`cli` calls the command in this process (typer's CliRunner): the same exit code, stdout and stderr
as a real process, without the 2-4 s that a new process spends importing torch (and torch._dynamo,
which torch.optim pulls in) before it trains.
`run_hpsearch` starts `python -m hpsearch`: for what only a real process shows (signals, kills, exit
codes 130/143, worker processes, process-wide limits, import-time behaviour, the entry point itself).
Both return a subprocess.CompletedProcess, so a test reads the same whichever one runs the command.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hpsearch.cli import app
from hpsearch.cli.console import err, out
from hpsearch.runs.records import TrialConfig, TrialResult
from hpsearch.spec.schema import ModelSpec, TrainSpec

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 200  # a wide terminal, so that tables are not folded
# Seconds: the cap on any one wait in the tests (a process, a record, an event). A cap catches a hang
# and nothing else: what takes seconds alone took minutes on a loaded 2-core machine, so no test waits
# on a deadline the work must meet; each waits for the event itself (wait_for), up to this.
PATIENCE = 600


def run_hpsearch(
    *args: str, cwd: Path = ROOT, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a real process; a wide terminal so tables are not folded.
    `preexec` runs in the child before exec (limits, privileges)."""
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env=env,
        preexec_fn=preexec,
    )


def wait_for(event: Callable[[], bool], what: str, every: float = 0.02) -> None:
    """Return once `event()` holds, looking every `every` seconds; fail saying `what` did not happen
    if it has not after PATIENCE seconds (a hang, not a slow machine)."""
    cap = time.monotonic() + PATIENCE
    while not event():
        assert time.monotonic() < cap, f"{what}: not after {PATIENCE} s"
        time.sleep(every)


def start_hpsearch(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    """run_hpsearch, started and not waited for: to signal or kill it while it runs."""
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The CLI called in this process, in `cwd`, with what run_hpsearch's process would get: the
    arguments in sys.argv (resume hints and run.json quote them), a wide terminal without colour,
    and Python's warnings on stderr. An exception that escapes a command (a traceback, in a real
    process) fails the test."""
    with _in(cwd), _argv(["hpsearch", *args]), _like_a_pipe(), _warnings_to_stderr():
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(WIDTH)}, prog_name="hpsearch")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"hpsearch {shlex.join(args)} raised {result.exception!r} (a process prints a traceback)\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        ) from result.exception
    return subprocess.CompletedProcess(["hpsearch", *args], result.exit_code, result.stdout, result.stderr)


@contextmanager
def _in(cwd: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    before = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = before


@contextmanager
def _like_a_pipe() -> Iterator[None]:
    """The CLI's consoles were made at import, sized and coloured for what sys.stdout was then (a
    terminal under `pytest -s`); they print to whatever sys.stdout/sys.stderr are when they print.
    For the call: WIDTH columns and no colour codes, as run_hpsearch's pipes get."""
    consoles = (out, err)
    saved = [(c._width, c._color_system) for c in consoles]
    for c in consoles:
        c.width = WIDTH
        c._color_system = None
    try:
        yield
    finally:
        for c, (width, colour) in zip(consoles, saved, strict=True):
            c._width, c._color_system = width, colour


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings printed on stderr, once each, under a fresh interpreter's filters (pytest would
    otherwise collect them for its summary, and a check of one line on stderr would miss them)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = show
        yield


class StopAfter:
    """Stage progress that presses Ctrl-C once this command has recorded `n` results (a halving
    stage's count restarts at each rung; this one does not)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None:
        pass

    def epochs_done(self, count: int) -> None:
        pass

    def rung(self, text: str) -> None:
        pass

    def trial_done(self, result: object, done: int, total: int, best: object) -> None:
        self.seen += 1
        if self.seen >= self.n:
            raise KeyboardInterrupt


def configs(
    model: ModelSpec, optimizer: str, lrs: list[float], wds: list[float], momenta: list[float] | None = None
) -> list[TrialConfig]:
    """Trials of one model, one per (lr, weight decay, momentum), for population-vs-one-at-a-time tests."""
    out = []
    for i, (lr, wd, m) in enumerate(zip(lrs, wds, momenta or [0.9] * len(lrs), strict=True)):
        train = TrainSpec(
            epochs=1, batch_size=20, optimizer=optimizer, lr=lr, weight_decay=wd, momentum=m, lr_decay=0.9, device="cpu"
        )  # type: ignore[arg-type]
        out.append(TrialConfig(i, {"lr": lr, "weight_decay": wd}, model, train, seed=7))
    return out


def max_relative_difference(a: list[TrialResult], b: list[TrialResult]) -> float:
    """The largest relative difference between two runs' per-step losses, trial by trial."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert x.trial == y.trial
        assert x.state is y.state
        assert len(x.losses) == len(y.losses)
        for u, v in zip(x.losses, y.losses, strict=True):
            worst = max(worst, abs(u - v) / abs(u))
    return worst
