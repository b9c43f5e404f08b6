"""The progress bar on stderr that every command that trains shows: planning, the data download,
the sanity checks or the trials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from hpsearch.cli.console import err

if TYPE_CHECKING:
    from hpsearch.runs.records import TrialResult


class _Eta(TimeRemainingColumn):
    """Time left, for the search bar only (a download shows its size, the checks their count)."""

    def render(self, task: Task) -> Text:
        return Text.assemble("eta ", super().render(task)) if task.fields.get("eta") else Text("")


class TrialProgress:
    """A progress bar on stderr, shown from the first update: planning, the data download if any,
    then trial i/N, elapsed time, time left and best so far. `name` labels the bar by what trains
    (a search, or `final`'s runs), `unit` what it counts; `planning`, if given, is shown on entering
    (see `planning`)."""

    def __init__(self, name: str = "search", unit: str = "trial", planning: str | None = None) -> None:
        self.name, self.unit, self.plan = name, unit, planning
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
        if self.plan is not None:
            self.planning(self.plan)
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

    def start(self, trials: int, trial_epochs: float, finished: int = 0) -> None:
        """A stage begins: the bar counts trial-epochs, so populations show progress every epoch.
        `finished`: trials already done before a resume."""
        self._planned()
        task = self._task("trials", self.name, trial_epochs)
        count = f"{self.unit} {finished}/{trials}"
        self.progress.update(task, total=trial_epochs, completed=0, count=count, eta=True)
        if finished:
            err.print(f"resuming: {finished} of {trials} {self.unit}s already finished, {trials - finished} to run")

    def epochs_done(self, count: float) -> None:
        self.progress.advance(self._task("trials", self.name, None), count)

    def rung(self, text: str) -> None:
        err.print(text, highlight=False)

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None:
        task = self._task("trials", self.name, None)
        shown = f"best val_acc {best.val_acc:.3f} (trial {best.trial})" if best and best.val_acc is not None else ""
        self.progress.update(task, count=f"{self.unit} {done}/{total}", best=shown)
