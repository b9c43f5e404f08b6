"""The command line: parse -> call the library -> render. The one module that knows the terminal.

Exit codes (the README has the table): 0 success; 1 a user error (one line on stderr, no traceback)
or a sanity check FAILed; 2 wrong usage; 3 a stage in which no trial completed (all failed or
diverged: its results are still written); 4 --fail-under: the best accuracy is below the bar;
5 --fail-on-edge: a range verdict says the optimum lies outside a searched range (4 wins when both
apply); 130 / 143 stopped by Ctrl-C / SIGTERM (finished trials saved, --resume continues).
Torch is imported only by the commands that train (coarse, refine, final, sanity-check), inside them:
`--help`, a spec error and `report` start without it.
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Optional, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from hpsearch.errors import HpsearchError, Interrupted, NothingToResume, StageStopped, interrupt_exit_code
from hpsearch.spec.options import ExecOptions, RayOptions, RefineOptions, StageOptions
from hpsearch.version import __version__

# The library is imported inside each command, where it is used: --help and usage errors need none of
# it, a spec error only pydantic, and `report` no torch.
if TYPE_CHECKING:
    from hpsearch.runs.final import FinalOutcome, FinalPlan
    from hpsearch.runs.records import TrialResult
    from hpsearch.search.refine import RefinePlan
    from hpsearch.spec.schema import Spec
    from hpsearch.stages.base import StageOutcome

app = typer.Typer(
    help="Hyperparameter search the cs231n way: sanity checks, coarse random search, refine, report, final.\n\n"
    "Example: hpsearch coarse configs/smoke.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Results on stdout, progress and diagnostics on stderr. Piped output gets a wide table, not a folded one.
def _width(stream: object) -> int | None:
    return None if getattr(stream, "isatty", lambda: False)() or "COLUMNS" in os.environ else 200


class NoTrailingSpaces:
    """sys.stdout for the results console, with no line ending in spaces. Rich pads a table's title
    and caption, and each line of a borderless table (the layout of a narrow terminal), with spaces
    to the table's width; a pipe or a file keeps them, and diff and git flag them. (On a terminal
    they are invisible either way.) Spaces at the end of one write wait for the next to show
    whether a line break follows. sys.stdout is looked up at each write, as rich does for its
    default file, so a stdout replaced later (CliRunner) is the one written to."""

    def __init__(self) -> None:
        self.held = ""

    def write(self, text: str) -> int:
        whole = self.held + text
        body = whole.rstrip(" ")
        self.held = whole[len(body) :]
        sys.stdout.write("\n".join(line.rstrip(" ") for line in body.split("\n")))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


# Markup and emoji codes off: paths, spec values and error messages are printed as they are.
# (rich calls write, flush and isatty on its file and reads its encoding: all NoTrailingSpaces has.)
out = Console(file=cast(IO[str], NoTrailingSpaces()), width=_width(sys.stdout), markup=False, emoji=False)
err = Console(stderr=True, width=_width(sys.stderr), markup=False, emoji=False)

TABLE_LIMIT = 20  # rows shown in the terminal; the files hold every trial
NO_TRIAL_COMPLETED = 3  # exit code of a stage in which every trial failed or diverged
BELOW_BAR = 4  # --fail-under: the best accuracy is below the bar
OUTSIDE_RANGE = 5  # --fail-on-edge: a verdict says the optimum lies outside a searched range


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A line worth knowing that is not a warning (the split an automatic val_size chose)."""
    err.print(message, highlight=False, soft_wrap=True, markup=False)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"hpsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = None,
) -> None:
    """Hyperparameter search the cs231n way. Example: hpsearch coarse configs/smoke.yaml"""


class _Eta(TimeRemainingColumn):
    """Time left, for the search bar only (a download shows its size, the checks their count)."""

    def render(self, task: Task) -> Text:
        return Text.assemble("eta ", super().render(task)) if task.fields.get("eta") else Text("")


class TrialProgress:
    """A progress bar on stderr, shown from the first update: planning, the data download if any,
    then trial i/N, elapsed time, time left and best so far. `name` labels the bar by what trains
    (a search, or `final`'s runs), `unit` what it counts."""

    def __init__(self, name: str = "search", unit: str = "trial") -> None:
        self.name, self.unit = name, unit
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[count]}", markup=False),
            TimeElapsedColumn(),
            _Eta(),
            TextColumn("{task.fields[best]}", markup=False),
            console=err,
        )
        self.tasks: dict[str, TaskID] = {}
        self.checks = 0  # sanity checks in all, once the first has started

    def __enter__(self) -> TrialProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if "steps" in self.tasks and exc[0] is None:
            total = self.checks
            self.progress.update(self.tasks["steps"], completed=total, count=f"{total}/{total}", best="done")
        if "trials" in self.tasks and exc[0] is None:  # trials that diverged early never report epochs
            task = self.tasks["trials"]
            planned = next(t.total for t in self.progress.tasks if t.id == task)  # ids are not positions
            self.progress.update(task, completed=planned)
        if self.tasks:
            before_work = set(self.tasks) <= {"plan", "data"}
            self._planned()
            # Stopped before any trial or check began (a refused spec, unreadable data): leave no bar
            # behind the error.
            self.progress.live.transient = before_work
            self.progress.stop()

    def _task(self, key: str, desc: str, total: float | None) -> TaskID:
        if not self.tasks:
            self.progress.start()
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(desc, total=total, count="", best="", eta=False)
        return self.tasks[key]

    def planning(self, desc: str) -> None:
        """Shown at once, while a large search is planned and torch imported; gone when work starts."""
        self._task("plan", desc, None)

    def _planned(self) -> None:
        if "plan" in self.tasks:
            self.progress.remove_task(self.tasks.pop("plan"))

    def on_data(self, desc: str, done: int, total: int | None) -> None:
        self._planned()
        task = self._task("data", desc, total)
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        self.progress.update(task, completed=done, total=total, count=size)

    def on_step(self, name: str, done: int, total: int) -> None:
        self.checks = total
        task = self._task("steps", "sanity-check", total)
        self.progress.update(task, completed=done, count=f"{done}/{total}", best=name)

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None:
        """A stage begins: the bar counts trial-epochs, so populations show progress every epoch.
        `finished`: trials already done before a resume."""
        self._planned()
        task = self._task("trials", self.name, trial_epochs)
        count = f"{self.unit} {finished}/{trials}"
        self.progress.update(task, total=trial_epochs, completed=0, count=count, eta=True)
        if finished:
            err.print(f"resuming: {finished} of {trials} {self.unit}s already finished, {trials - finished} to run")

    def epochs_done(self, count: int) -> None:
        self.progress.advance(self._task("trials", self.name, None), count)

    def rung(self, text: str) -> None:
        err.print(text, highlight=False)

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None:
        task = self._task("trials", self.name, None)
        shown = f"best val_acc {best.val_acc:.3f} (trial {best.trial})" if best and best.val_acc is not None else ""
        self.progress.update(task, count=f"{self.unit} {done}/{total}", best=shown)


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
        code = interrupt_exit_code(e)
    if isinstance(e, StageStopped):
        return fail(f"interrupted: {e.message}; resume with: {resume_command}", code=code)
    return fail("interrupted before any trial ran", code=code)


def resume_command(command: str, out_dir: Path | None, run_dir: Path | None) -> str:
    """The command line that continues this run: the user's own, with --out and --resume."""
    args = [a for a in sys.argv[1:] if a != "--resume"]
    if out_dir is None and run_dir is not None:
        args += ["--out", str(run_dir)]
    return shlex.join(["hpsearch", *args, "--resume"]) if args else f"hpsearch {command} --resume"


@dataclass(frozen=True)
class Gates:
    """CI gates: exit non-zero when the best accuracy is below `fail_under`, or (`fail_on_edge`) when
    a range verdict says the optimum lies outside a searched range."""

    fail_under: float | None = None
    fail_on_edge: bool = False


def render_outcome(outcome: StageOutcome, gates: Gates = Gates()) -> None:
    """The ranked table on stdout; how many trials are tied for best, warnings, failures and where the
    files are on stderr; the table and warnings in the CI step summary. Exit 3 when no trial of the
    stage completed, 4 or 5 when a gate fails."""
    from hpsearch.output.ci import summary_section
    from hpsearch.output.report import markdown_table, rich_table, ties_line

    warnings = list(outcome.warnings)
    for w in outcome.warnings:
        warn(w)
    if outcome.resumed and outcome.resumed == len(outcome.ranked):  # a resume with nothing left to train
        n = outcome.resumed
        err.print(f"resuming: {n} of {n} trials already finished, 0 to run", highlight=False)
    title = f"{outcome.stage}: {len(outcome.ranked)} trials, ranked by validation accuracy"
    planned = outcome.planned_epochs
    out.print(
        rich_table(
            title, outcome.ranked, outcome.param_names, limit=TABLE_LIMIT, planned_epochs=planned, data=outcome.data
        )
    )
    ties = ties_line(outcome.ranked, outcome.data)
    if ties:
        err.print(ties, highlight=False, soft_wrap=True)
    for e in outcome.edges:
        if e.warning:
            warn(e.warning)
            warnings.append(e.warning)
    if outcome.advice:
        warn(outcome.advice)
        warnings.append(outcome.advice)
    if outcome.failures:
        warn(f"{outcome.failures}; tracebacks in {outcome.stage_dir / 'trials.jsonl'}")
        warnings.append(outcome.failures)
    err.print(f"results: {outcome.stage_dir}/results.md, results.csv, results.json", highlight=False)
    table = markdown_table(outcome.ranked, outcome.param_names, planned_epochs=planned, data=outcome.data)
    red = stage_red(outcome, gates)
    summary(summary_section(f"hpsearch {outcome.stage}: {outcome.stage_dir.parent}", table, warnings, red_line(red)))
    if red is not None:
        raise fail(red.message, code=red.code)


@dataclass(frozen=True)
class Red:
    """Why a command that ran exits non-zero (3, 4, 5): the code, and the one line that says why, on
    stderr and in the CI step summary."""

    code: int
    message: str


def red_line(red: Red | None) -> str | None:
    return None if red is None else f"exit {red.code}: {red.message}"


def stage_red(outcome: StageOutcome, gates: Gates) -> Red | None:
    """Exit 3 when no trial completed; else 4 below the --fail-under bar; else 5 for --fail-on-edge."""
    if outcome.best is None:
        states = _states(outcome.ranked)
        return Red(NO_TRIAL_COMPLETED, f"no trial of {outcome.stage} completed ({states}): nothing to rank or refine")
    below = below_bar(gates, outcome.best.val_acc, f"the best validation accuracy of {outcome.stage}")
    if below is not None:
        return below
    outside = [e for e in outcome.edges if e.verdict.value in ("edge", "nothing_learned")]
    if gates.fail_on_edge and outside:
        names = ", ".join(f"{e.name} ({e.verdict.value})" for e in outside)
        return Red(OUTSIDE_RANGE, f"--fail-on-edge: the optimum lies outside the searched range of {names}")
    return None


def below_bar(gates: Gates, best: float | None, what: str) -> Red | None:
    if gates.fail_under is not None and (best is None or best < gates.fail_under):
        shown = "none" if best is None else f"{best:.4f}"
        return Red(BELOW_BAR, f"--fail-under {gates.fail_under}: {what} is {shown}, below the bar")
    return None


def summary(markdown: str) -> None:
    """Append to the CI step summary ($GITHUB_STEP_SUMMARY) when one is set."""
    from hpsearch.output.ci import append_step_summary

    problem = append_step_summary(markdown)
    if problem:
        warn(problem)


def _states(results: list[TrialResult]) -> str:
    counts = Counter(r.state.value for r in results)
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"


RESUME_HELP = (
    "Continue the run in --out after a crash, kill or Ctrl-C: finished trials are kept, the others run. "
    "The spec and options must be the same as the first time (starts the run if it does not exist)."
)
RESUME_REFINE_HELP = (
    "Finish the newest refine stage after a crash, kill or Ctrl-C (same options as before); never starts a new stage."
)


class Executor(str, enum.Enum):
    LOCAL = "local"
    RAY = "ray"


def nonempty_path(value: str) -> Path:
    """An empty --out or --data-root would silently mean the current directory."""
    if not value.strip():
        raise typer.BadParameter("an empty path; give a folder (. for this one)")
    return Path(value)


# Options that coarse and refine (and sanity-check, for --data-root and --out) share.
DataRootOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-root", parser=nonempty_path, help="Where CIFAR-10 lives (beats $HPSEARCH_DATA_ROOT and data.root)."
    ),
]
OutOption = Annotated[
    Optional[Path], typer.Option("--out", parser=nonempty_path, help="Run directory (default runs/<name>).")
]
PopulationOption = Annotated[
    Optional[int],
    typer.Option(min=1, help="Trials trained together in one process (default: from memory; 1: one at a time)."),
]
WorkersOption = Annotated[
    Optional[int], typer.Option(min=1, help="Worker processes (default: 1 per 8 cores, at least 1).")
]
ExecutorOption = Annotated[
    Executor, typer.Option(help="local: this machine; ray: a Ray cluster (pip install 'hpsearch\\[ray]').")
]
RayAddressOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: the one on this machine, else a new one).",
    ),
]


FailUnderOption = Annotated[
    Optional[float],
    typer.Option(
        "--fail-under",
        min=0.0,
        max=1.0,
        metavar="ACC",
        help="CI gate: exit 4 when the best validation accuracy is below ACC (e.g. 0.35).",
    ),
]
FailOnEdgeOption = Annotated[
    bool,
    typer.Option(
        "--fail-on-edge",
        help="CI gate: exit 5 when a range verdict says the optimum lies outside a searched range "
        "(an edge, or nothing learned).",
    ),
]


def execution_options(
    population: int | None, workers: int | None, executor: Executor, ray_address: str | None
) -> ExecOptions:
    if ray_address is not None and executor is not Executor.RAY:
        raise fail("--ray-address needs --executor ray", code=2)
    ray = RayOptions(address=ray_address) if executor is Executor.RAY else None
    return ExecOptions(population=population, workers=workers, ray=ray)


def preflight(spec: Spec | None, spec_path: str | None, workers: int | None = None, plan: bool = True) -> None:
    """Before any work, on stderr: the grid a grid search built (unless `plan` is False: a dry run
    prints it in its plan), and each setting that makes no sense, once (hpsearch.spec.lint)."""
    from hpsearch.search.space import describe_grid
    from hpsearch.search.tpe import describe_tpe
    from hpsearch.spec.lint import execution_warnings, spec_warnings

    if spec is not None:
        line = describe_grid(spec.search, spec_path) or describe_tpe(spec.search)
        if line is not None and plan:
            err.print(line, highlight=False, soft_wrap=True, markup=False)
        for w in spec_warnings(spec):
            warn(w)
    for w in execution_warnings(workers, os.cpu_count()):
        warn(w)


def say_model(line: str) -> None:
    """A spec that names Python code runs it: which file was loaded (and its hash), once, on stderr."""
    err.print(line, highlight=False, soft_wrap=True)


@app.command("sanity-check")
def sanity_check(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="YAML spec file.")],
    out_dir: OutOption = None,
    data_root: DataRootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    write_spec: Annotated[
        Optional[Path], typer.Option("--write-spec", help="Write a copy of the spec with the recommended lr range.")
    ] = None,
    junit: Annotated[
        Optional[Path],
        typer.Option("--junit", metavar="FILE", help="Also write the checks as JUnit XML (one testcase per check)."),
    ] = None,
) -> None:
    """The lecture's checks before a search: initial loss = ln(C), activation statistics at init,
    overfitting 20 examples, and a learning-rate probe. Exit code 1 if any check FAILs.

    Example: hpsearch sanity-check configs/cifar10_coarse.yaml --write-spec configs/next.yaml
    """
    started = time.perf_counter()
    try:
        from hpsearch.spec.load import load_spec

        spec = load_spec(spec_path)
        preflight(spec, str(spec_path))
        from hpsearch.stages.sanity import run_sanity

        with TrialProgress() as progress:
            outcome = run_sanity(
                spec,
                str(spec_path),
                StageOptions(out=out_dir, data_root=data_root, command=tuple(sys.argv)),
                write_spec=write_spec,
                on_data=progress.on_data,
                on_step=progress.on_step,
                on_model=say_model,
                on_warning=warn,
                on_note=note,
            )
    except HpsearchError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    from hpsearch.output.report import sanity_tables
    from hpsearch.sanity.probe import lr_range_hint

    if as_json:
        out.print_json(json.dumps(outcome.report.to_dict()))
    else:
        for table in sanity_tables(outcome.report):
            out.print(table)
    err.print(f"report: {outcome.report_path}", highlight=False)
    from hpsearch.output.ci import junit_xml, sanity_markdown, summary_section, write_junit

    if junit is not None:
        try:
            write_junit(junit, junit_xml(outcome.report, spec.name, time.perf_counter() - started))
        except HpsearchError as e:
            raise fail(str(e)) from None
        err.print(f"junit: {junit}", highlight=False)
    verdict = "FAILED" if outcome.report.failed else "passed"
    summary(summary_section(f"hpsearch sanity-check: {spec.name} ({verdict})", sanity_markdown(outcome.report), []))
    if outcome.written_spec:
        # Quoted as the resume command is: a path with a space or a quote pastes into a shell whole.
        command = shlex.join(["hpsearch", "coarse", str(outcome.written_spec)])
        err.print(f"wrote {outcome.written_spec}: run {command}", highlight=False, soft_wrap=True)
    elif write_spec:
        warn(f"no lr range to recommend, so {write_spec} was not written")
    elif hint := lr_range_hint(spec, outcome.report.recommended_lr):
        err.print(f"hint: {hint}", highlight=False, soft_wrap=True)
    if outcome.report.failed:
        raise typer.Exit(code=1)


@app.command()
def coarse(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="YAML spec file.")],
    out_dir: OutOption = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Override search.trials.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override train.epochs (and searched epochs).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override search.seed.")] = None,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    executor: ExecutorOption = Executor.LOCAL,
    ray_address: RayAddressOption = None,
    fail_under: FailUnderOption = None,
    fail_on_edge: FailOnEdgeOption = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (trials, populations, epochs, sampler, estimated time) and train nothing.",
        ),
    ] = False,
) -> None:
    """Random search: short trainings, a ranked table, and a verdict on each range from all the trials
    (accuracy points past an edge; nothing learned, and which way to move).
    Exit code 3 if no trial completed (every one failed or diverged); 4 and 5 for the CI gates.

    Example: hpsearch coarse configs/cifar10_coarse.yaml --trials 10 --epochs 1 --out runs/quick
    """
    if dry_run and resume:
        raise fail("--dry-run plans a new stage: leave out --resume", code=2)
    try:
        with interruptible():
            from hpsearch.spec.load import load_spec, with_overrides

            spec = with_overrides(load_spec(spec_path), trials=trials, epochs=epochs, seed=seed)
            preflight(spec, str(spec_path), workers, plan=not dry_run)
            options = StageOptions(
                out=out_dir,
                data_root=data_root,
                command=tuple(sys.argv),
                execution=execution_options(population, workers, executor, ray_address),
                resume=resume,
            )
            if dry_run:
                print_coarse_plan(spec, str(spec_path), options)
                return
            with TrialProgress() as progress:
                progress.planning(f"planning {spec.search.trials:,} trials")
                from hpsearch.stages.coarse import run_coarse

                outcome = run_coarse(
                    spec,
                    str(spec_path),
                    options,
                    on_data=progress.on_data,
                    progress=progress,
                    on_model=say_model,
                    on_warning=warn,
                    on_note=note,
                )
    except HpsearchError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt as e:
        run_dir = e.stage_dir.parent if isinstance(e, StageStopped) else None
        raise stopped(e, resume_command("coarse", out_dir, run_dir)) from None
    render_outcome(outcome, Gates(fail_under, fail_on_edge))


@app.command()
def refine(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory holding a coarse stage.")],
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="Plan around the best K trials.")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the new stage.")] = None,
    epochs: Annotated[
        Optional[int], typer.Option(min=1, help="Epochs per trial (default: refine.epochs_factor x).")
    ] = None,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_REFINE_HELP)] = False,
    executor: ExecutorOption = Executor.LOCAL,
    ray_address: RayAddressOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the planned stage (ranges, trials, epochs) and train nothing.")
    ] = False,
    fail_under: FailUnderOption = None,
    fail_on_edge: FailOnEdgeOption = False,
) -> None:
    """Plan the next stage from the latest one and run it: ranges narrowed around the top-k trials
    (or moved outward where the stage's verdict says accuracy points past an edge), longer training,
    no lr decay. Run it again to refine further. A stage where nothing learned is not refined: it
    exits 1 saying which way to change the range in the spec, for a new coarse search. Exit code 3
    if no trial of the new stage completed; 4 and 5 for the CI gates.

    Example: hpsearch refine runs/cifar10_coarse --top-k 5 --trials 20
    """
    options = RefineOptions(
        top_k=top_k,
        trials=trials,
        epochs=epochs,
        data_root=data_root,
        command=tuple(sys.argv),
        execution=execution_options(population, workers, executor, ray_address),
        resume=resume,
    )
    if dry_run:
        print_plan(run_dir, options)
        return
    preflight(None, None, workers)
    try:
        with interruptible():
            with TrialProgress() as progress:
                progress.planning(f"planning the next stage of {run_dir}")
                from hpsearch.stages.refine import run_refine

                result = run_refine(
                    run_dir,
                    options,
                    on_data=progress.on_data,
                    progress=progress,
                    on_plan=render_plan,
                    on_model=say_model,
                    on_warning=warn,
                )
    except NothingToResume as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        return
    except HpsearchError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt as e:
        raise stopped(e, resume_command("refine", run_dir, None)) from None
    if result.outcome is None:
        err.print("nothing new to train: raise --epochs or --trials, or widen the space", highlight=False)
        return
    render_outcome(result.outcome, Gates(fail_under, fail_on_edge))


def print_coarse_plan(spec: Spec, spec_path: str, options: StageOptions) -> None:
    """coarse --dry-run: the plan on stdout, nothing trained or written."""
    from hpsearch.stages.plan import plan_coarse

    plan = plan_coarse(spec, spec_path, options, on_model=say_model)
    for line in plan.describe():
        out.print(line, highlight=False, soft_wrap=True)


def print_plan(run_dir: Path, options: RefineOptions) -> None:
    """refine --dry-run: the plan on stdout (ranges, trials, epochs, populations, estimated time),
    nothing trained or written."""
    from hpsearch.stages.plan import plan_refine_stage

    try:
        plan, stage = plan_refine_stage(run_dir, options, on_model=say_model)
    except HpsearchError as e:
        raise fail(str(e)) from None
    for line in plan.describe() + (stage.describe(header=False) if stage is not None else []):
        out.print(line, highlight=False, soft_wrap=True)
    for note in plan.notes:
        warn(note)


def render_plan(plan: RefinePlan) -> None:
    for line in plan.describe():
        err.print(line, highlight=False, soft_wrap=True)
    for note in plan.notes:
        warn(note)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory.")],
) -> None:
    """Learning curves and search pictures as PNG files under RUN/report/, and one ranked table
    across all stages with each trial's stage and curve label.

    Example: hpsearch report runs/cifar10_coarse
    """
    try:
        from hpsearch.output.report import rich_table, run_report, ties_line

        outcome = run_report(run_dir)
    except HpsearchError as e:
        raise fail(str(e)) from None
    out.print(
        rich_table(
            outcome.title,
            outcome.ranked,
            outcome.param_names,
            limit=TABLE_LIMIT,
            stages=outcome.stage_of,
            planned_epochs=outcome.planned_epochs,
            data=outcome.data,
        )
    )
    ties = ties_line(outcome.ranked, outcome.data)
    if ties:
        err.print(ties, highlight=False, soft_wrap=True)
    for note in outcome.notes:
        warn(note)
    from hpsearch.output.ci import summary_section
    from hpsearch.output.report import markdown_table

    table = markdown_table(
        outcome.ranked, outcome.param_names, outcome.stage_of, planned_epochs=outcome.planned_epochs, data=outcome.data
    )
    summary(summary_section(f"hpsearch report: {run_dir}", table, list(outcome.notes)))
    for path in outcome.plots:
        err.print(f"plot: {path}", highlight=False)
    err.print(f"results: {outcome.results_path}", highlight=False)


class FitOnChoice(str, enum.Enum):
    TRAIN_VAL = "train+val"
    TRAIN = "train"


@app.command()
def final(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory with a finished stage.")],
    top: Annotated[
        Optional[int],
        typer.Option("--top", min=1, help="Finalists: the best K (default: the trials tied with the best)."),
    ] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Runs per finalist (default 3).")] = None,
    fit_on: Annotated[
        Optional[FitOnChoice],
        typer.Option("--fit-on", help="train+val (default): train on both; train: hold validation out and report it."),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs per run (default: the stage's).")] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Evaluate the test set although an earlier final did (another look at it).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted final (same options); never starts a new one.")
    ] = False,
    data_root: DataRootOption = None,
    population: PopulationOption = None,
    workers: WorkersOption = None,
    fail_under: Annotated[
        Optional[float],
        typer.Option(
            "--fail-under",
            min=0.0,
            max=1.0,
            metavar="ACC",
            help="CI gate: exit 4 when the best mean test accuracy is below ACC.",
        ),
    ] = None,
) -> None:
    """The end of a search: train the latest stage's best configurations with several seeds, score
    each on the test set once, keep the best network (RUN/final/model.pt; hpsearch.load_model reads
    it). Every test evaluation is logged in RUN/final/test_ledger.jsonl; a second final on the same
    run is refused unless --again. Exit code 4 for the --fail-under gate.

    Example: hpsearch final runs/cifar10_coarse --seeds 3
    """
    from hpsearch.spec.options import FinalOptions, FitOn

    options = FinalOptions(
        top=top,
        seeds=seeds,
        fit_on=FitOn(fit_on.value) if fit_on is not None else None,
        epochs=epochs,
        again=again,
        data_root=data_root,
        command=tuple(sys.argv),
        execution=execution_options(population, workers, Executor.LOCAL, None),
        resume=resume,
    )
    preflight(None, None, workers)
    try:
        with interruptible():
            with TrialProgress("final", "run") as progress:
                progress.planning(f"planning the final of {run_dir}")
                from hpsearch.stages.final import run_final

                outcome = run_final(
                    run_dir,
                    options,
                    on_data=progress.on_data,
                    progress=progress,
                    on_plan=render_final_plan,
                    on_model=say_model,
                    on_warning=warn,
                )
    except NothingToResume as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        return
    except HpsearchError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt as e:
        raise stopped(e, resume_command("final", run_dir, None)) from None
    render_final(outcome, Gates(fail_under))


def render_final_plan(plan: FinalPlan) -> None:
    err.print(plan.describe(), highlight=False, soft_wrap=True)
    for note in plan.notes:
        warn(note)


def render_final(outcome: FinalOutcome, gates: Gates) -> None:
    from hpsearch.output.ci import summary_section
    from hpsearch.output.final import final_markdown, rich_final_table, summary_lines, title

    out.print(title(outcome), highlight=False, soft_wrap=True)
    out.print(rich_final_table(outcome))
    for line in summary_lines(outcome):
        err.print(line, highlight=False, soft_wrap=True)
    if outcome.model_path is not None:
        err.print(f"model: {outcome.model_path} (load it with hpsearch.load_model)", highlight=False)
    err.print(
        f"results: {outcome.final_dir}/results.md, results.json; ledger: {outcome.final_dir}/test_ledger.jsonl",
        highlight=False,
        soft_wrap=True,
    )
    red = final_red(outcome, gates)
    heading, table = f"hpsearch final: {outcome.plan.run_dir}", final_markdown(outcome, heading=False)
    summary(summary_section(heading, table, [], red_line(red)))
    if red is not None:
        raise fail(red.message, code=red.code)


def final_red(outcome: FinalOutcome, gates: Gates) -> Red | None:
    """Exit 3 when no run of the final completed; else 4 below the --fail-under bar."""
    if outcome.best is None:
        message = f"no run of the final completed: nothing to keep (see {outcome.final_dir}/results.md)"
        return Red(NO_TRIAL_COMPLETED, message)
    what = "the best mean test accuracy" if outcome.test_size is not None else "the best mean validation accuracy"
    return below_bar(gates, outcome.best_accuracy, what)


if __name__ == "__main__":
    app()
