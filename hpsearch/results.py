"""What the Python API (hpsearch.api) returns: one typed result per command. Each shows in a Jupyter
notebook as the table the CLI prints (`_repr_html_`; `__rich__` for rich's own rendering), gives its
rows as plain dicts (`rows()`, the rows its results.json holds) and as a pandas DataFrame
(`to_pandas()`, where pandas is installed). Reading and rendering only: no torch, nothing printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from hpsearch.analysis.verdicts import Edge
from hpsearch.errors import StoreError
from hpsearch.output.final import final_document, rich_final_table, summary_lines, title
from hpsearch.output.html import lines_html, table_html
from hpsearch.output.report import FULL, results_document, rich_table, sanity_tables, ties_line
from hpsearch.runs.final import FinalOutcome, FinalPlan, FinalRow, ledger_entries
from hpsearch.runs.read import how_to_start, load_stage, stages
from hpsearch.runs.records import CurveData, TrialResult, TrialState
from hpsearch.runs.store import read_json
from hpsearch.sanity.results import CheckResult, CheckVerdict, LayerStats, ProbeRow, SanityReport
from hpsearch.search.refine import RefinePlan
from hpsearch.spec.schema import Spec

if TYPE_CHECKING:
    import pandas

TABLE_LIMIT = 20  # rows a notebook shows, as the terminal does; rows() and to_pandas() hold every one


def frame(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    """`rows` as a DataFrame, each row's params as columns of their own."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_pandas() needs pandas, which is not installed: pip install pandas", name="pandas"
        ) from None
    return pandas.DataFrame([_flat(r) for r in rows])


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its params as columns (`params.<name>` for a parameter named like a column, say
    epochs) and its 95% interval as val_acc_low and val_acc_high, as results.csv has them."""
    out = {k: v for k, v in row.items() if k not in ("params", "val_acc_interval")}
    if "val_acc_interval" in row:
        low, high = row["val_acc_interval"] or (None, None)
        out |= {"val_acc_low": low, "val_acc_high": high}
    for name, value in (row.get("params") or {}).items():
        out[f"params.{name}" if name in row else name] = value
    return out


def _best_text(best: TrialResult | None) -> str:
    return f"best val_acc {best.val_acc:.3f} (trial {best.trial})" if best and best.val_acc is not None else "no best"


@dataclass(frozen=True, repr=False)
class StageResult:
    """A stage that ran, coarse or refine-K: its trials best first (the order of its results.json)
    and the verdict on each searched range."""

    stage: str  # coarse, refine-1, ...
    dir: Path  # RUN/<stage>: results.md/csv/json, trials.jsonl, spec.yaml, run.json
    ranked: list[TrialResult]
    verdicts: dict[str, Edge]  # each searched numeric parameter's range: .verdict, .reason, .flag
    param_names: list[str]
    warnings: list[str] = field(default_factory=list)  # what the CLI prints as `warning:` lines
    notes: list[str] = field(default_factory=list)  # the rest it says on stderr: the split chosen, the network loaded
    data: CurveData | None = None  # the classes and validation examples its accuracies were measured on
    planned_epochs: list[int] | None = None  # successive halving: each ranked trial's planned epochs
    resumed: int = 0  # trials finished before this call (resume)
    plan: RefinePlan | None = None  # refine: the plan the stage trained

    @property
    def best(self) -> TrialResult | None:
        """The top trial when it completed; None when no trial did."""
        return self.ranked[0] if self.ranked and self.ranked[0].state is TrialState.COMPLETE else None

    @property
    def run_dir(self) -> Path:
        return self.dir.parent

    @property
    def title(self) -> str:
        return f"{self.stage}: {len(self.ranked)} trials, ranked by validation accuracy"

    def rows(self) -> list[dict[str, Any]]:
        """Each trial as results.json's `ranked` has it: rank, trial, state, params, val_acc and its
        95% interval, tied_for_best, train_acc, train_loss, epochs, curve."""
        edges = list(self.verdicts.values())
        return results_document(self.stage, self.ranked, edges, {}, self.data, self.planned_epochs)["ranked"]

    def to_pandas(self) -> pandas.DataFrame:
        return frame(self.rows())

    def __rich__(self) -> Any:
        return rich_table(
            self.title, self.ranked, self.param_names, TABLE_LIMIT, planned_epochs=self.planned_epochs, data=self.data
        )

    def _repr_html_(self) -> str:
        ties = ties_line(self.ranked, self.data)
        return (
            table_html(self.__rich__().table(FULL))
            + lines_html([ties] if ties else [], "ties")
            + lines_html(self.warnings, "warning")
        )

    def __repr__(self) -> str:
        return f"StageResult({self.title}; {_best_text(self.best)}; dir={str(self.dir)!r})"


@dataclass(frozen=True, repr=False)
class SanityResult:
    """The lecture's four checks before a search (hpsearch.sanity_check), as RUN/sanity/report.json
    holds them."""

    checks: list[CheckResult]  # initial loss, activation statistics, overfit a small sample, learning-rate probe
    layers: list[LayerStats]  # activation statistics at init, per layer
    probe: list[ProbeRow]  # the learning-rate probe, per lr
    recommended_lr: tuple[float, float] | None  # the probe's lr range; None when it found none
    report_path: Path  # RUN/sanity/report.json
    written_spec: Path | None = None  # write_spec: the spec written with the recommended lr range
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No check FAILed (a WARN passes, as the CLI's exit code 0 says)."""
        return not any(c.verdict is CheckVerdict.FAIL for c in self.checks)

    @property
    def report(self) -> SanityReport:
        return SanityReport(self.checks, self.layers, self.probe, self.recommended_lr)

    def rows(self) -> list[dict[str, Any]]:
        """Each check: its name, verdict (PASS, WARN, FAIL), the numbers measured and what they mean."""
        return [
            {"check": c.check, "verdict": c.verdict.value, "measured": c.measured, "diagnosis": c.diagnosis}
            for c in self.checks
        ]

    def to_pandas(self) -> pandas.DataFrame:
        return frame(self.rows())

    def __rich__(self) -> Group:
        return Group(*sanity_tables(self.report))

    def _repr_html_(self) -> str:
        return "".join(table_html(t) for t in sanity_tables(self.report)) + lines_html(self.warnings, "warning")

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{c.check} {c.verdict.value}" for c in self.checks)
        return f"SanityResult({'passed' if self.passed else 'FAILED'}: {verdicts}; report={str(self.report_path)!r})"


@dataclass(frozen=True)
class LedgerEntry:
    """One evaluation of the test set, as RUN/final/test_ledger.jsonl recorded it."""

    attempt: int  # 1 for a run's first final; each `again` adds one
    time: str  # UTC, ISO 8601
    command: list[str] | None  # the command line; None from the Python API
    stage: str  # the stage the finalist came from
    trial: int
    params: dict[str, Any]
    seed: int
    fit_on: str  # train+val or train
    epochs: int
    test_acc: float
    test_size: int
    val_acc: float | None  # fit_on train: its validation accuracy

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerEntry | None:
        """A ledger line read back; None for one that is not an entry (edited by hand)."""
        try:
            command = d.get("command")
            return cls(
                attempt=int(d["attempt"]),
                time=str(d["time"]),
                command=[str(a) for a in command] if isinstance(command, list) else None,
                stage=str(d["stage"]),
                trial=int(d["trial"]),
                params=dict(d["params"]),
                seed=int(d["seed"]),
                fit_on=str(d["fit_on"]),
                epochs=int(d["epochs"]),
                test_acc=float(d["test_acc"]),
                test_size=int(d["test_size"]),
                val_acc=None if d.get("val_acc") is None else float(d["val_acc"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def read_ledger(final_dir: Path) -> list[LedgerEntry]:
    """Every test evaluation of a run, oldest first ([] before its first final)."""
    entries = (LedgerEntry.from_dict(d) for d in ledger_entries(final_dir))
    return [e for e in entries if e is not None]


@dataclass(frozen=True, repr=False)
class FinalResult:
    """The end of a search (hpsearch.final): the finalists best first, each trained with several
    seeds and scored once on the test set, every evaluation in the ledger."""

    dir: Path  # RUN/final: results.md/json, test_ledger.jsonl, model.pt
    plan: FinalPlan  # the finalists, seeds, epochs and what they trained on
    ranked: list[FinalRow]  # best first: by mean test accuracy (validation when there is no test split)
    ledger: list[LedgerEntry]  # every test evaluation of the run, by every final, oldest first
    test_size: int | None  # None: the data has no test split
    seen: int  # finals that have evaluated the run's test set, this one included
    model_path: Path | None  # the best network (hpsearch.load_model reads it)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: int = 0  # runs finished before this call (resume)

    @property
    def outcome(self) -> FinalOutcome:
        """As the library returned it (the CLI renders that)."""
        return FinalOutcome(
            self.plan, self.ranked, self.test_size, self.seen, self.model_path, self.dir, self.notes, self.resumed
        )

    @property
    def best(self) -> FinalRow | None:
        return self.outcome.best

    def rows(self) -> list[dict[str, Any]]:
        """Each finalist as RUN/final/results.json's `ranked` has it: test accuracy mean, std and per
        seed, validation accuracy per seed, states, and its accuracy in the search."""
        return list(final_document(self.outcome)["ranked"])

    def to_pandas(self) -> pandas.DataFrame:
        return frame(self.rows())

    def __rich__(self) -> Table:
        table = rich_final_table(self.outcome)
        table.title, table.title_justify = title(self.outcome), "left"
        return table

    def _repr_html_(self) -> str:
        return table_html(self.__rich__()) + lines_html(summary_lines(self.outcome), "note")

    def __repr__(self) -> str:
        best = self.best
        shown = f"best trial {best.finalist.trial}" if best else "no run completed"
        return f"FinalResult({title(self.outcome)}; {shown}; dir={str(self.dir)!r})"


@dataclass(frozen=True, repr=False)
class Run:
    """A run directory as written, read only (hpsearch.open_run): its finished stages, each stage's
    spec and ranked trials, and the final's test ledger."""

    dir: Path
    stages: list[str]  # finished, in order: coarse, refine-1, ...

    @classmethod
    def open(cls, run_dir: Path) -> Run:
        if not run_dir.is_dir():
            raise StoreError(f"{run_dir}: no such run directory")
        return cls(run_dir, stages(run_dir))

    def _stage(self, stage: str | None) -> str:
        if not self.stages:
            raise StoreError(f"{self.dir}: no finished stage; {how_to_start(self.dir)}")
        if stage is None:
            return self.stages[-1]
        if stage not in self.stages:
            raise StoreError(f"{self.dir}: no finished stage {stage!r} (it has {', '.join(self.stages)})")
        return stage

    def spec(self, stage: str | None = None) -> Spec:
        """The resolved spec a stage ran (the latest stage by default)."""
        return load_stage(self.dir, self._stage(stage)).spec

    def ranked(self, stage: str | None = None) -> list[TrialResult]:
        """A stage's trials best first, in its results.json's order (the latest stage by default)."""
        loaded = load_stage(self.dir, self._stage(stage))
        by_trial = {r.trial: r for r in loaded.results}
        return [by_trial[t] for t in _ranked_trials(loaded.doc) if t in by_trial]

    def rows(self, stage: str | None = None) -> list[dict[str, Any]]:
        """A stage's results.json rows (the latest stage by default), as StageResult.rows() gives them."""
        doc = read_json(self.dir / self._stage(stage) / "results.json")
        return [row for row in doc.get("ranked", []) if isinstance(row, dict)] if isinstance(doc, dict) else []

    @property
    def ledger(self) -> list[LedgerEntry]:
        return read_ledger(self.dir / "final")

    def to_pandas(self, stage: str | None = None) -> pandas.DataFrame:
        return frame(self.rows(stage))

    def __rich__(self) -> Table:
        table = Table(title=f"run {self.dir}", title_justify="left", caption_justify="left")
        for name in ("stage", "trials", "best trial", "best val_acc"):
            table.add_column(name, justify="left" if name == "stage" else "right")
        for s in self.stages:
            ranked = self.ranked(s)
            best = ranked[0] if ranked and ranked[0].state is TrialState.COMPLETE else None
            acc = "-" if best is None or best.val_acc is None else f"{best.val_acc:.3f}"
            table.add_row(s, str(len(ranked)), "-" if best is None else str(best.trial), acc)
        ledger = self.ledger
        if ledger:
            table.caption = f"final: {len(ledger)} test evaluations in {self.dir / 'final' / 'test_ledger.jsonl'}"
        return table

    def _repr_html_(self) -> str:
        return table_html(self.__rich__())

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, stages={self.stages!r})"


def _ranked_trials(doc: Any) -> list[int]:
    rows = doc.get("ranked", []) if isinstance(doc, dict) else []
    return [row["trial"] for row in rows if isinstance(row, dict) and isinstance(row.get("trial"), int)]
