"""`hpsearch final`'s tables: the terminal's (rich), results.md (and the CI step summary), results.json.

One row per finalist configuration: its test accuracy over the seeds (mean, std, each seed's), the
95% interval of one run's accuracy on the test examples, and its validation accuracy where it was
held out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from hpsearch.analysis.rank import fmt_value, wilson_interval
from hpsearch.runs.records import TrialState, jsonable

if TYPE_CHECKING:
    from hpsearch.runs.final import FinalOutcome, FinalRow


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _per_seed(accs: dict[int, float | None], states: dict[int, TrialState], seeds: list[int]) -> str:
    cells = []
    for s in seeds:
        if s not in states:
            cells.append("·")  # not run (an interrupted final)
        elif states[s] is not TrialState.COMPLETE:
            cells.append(states[s].value)
        else:
            cells.append(_acc(accs.get(s)))
    return " ".join(cells)


def _interval(row: FinalRow, outcome: FinalOutcome) -> str:
    n = outcome.test_size
    mean = row.test_mean
    if n is None or mean is None:
        return "-"
    low, high = wilson_interval(mean, n)
    return f"{low:.3f}-{high:.3f}"


def shown_params(row: FinalRow) -> str:
    """'lr 0.0113, weight_decay 1.7e-04': a configuration in one line."""
    return ", ".join(f"{k} {fmt_value(v)}" for k, v in sorted(row.finalist.params.items()))


def title(outcome: FinalOutcome) -> str:
    plan = outcome.plan
    configs = f"{len(plan.finalists)} configuration{'s' if len(plan.finalists) != 1 else ''}"
    fit = "train + validation" if plan.fit_on.value == "train+val" else "train"
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) != 1 else ''}"
    head = f"final: {configs} x {seeds}, {plan.epochs} epoch{'s' if plan.epochs != 1 else ''} on {fit}"
    if outcome.test_size is None:
        return head + ", ranked by validation accuracy (no test split)"
    head += f", scored once on {outcome.test_size:,} test examples"
    if outcome.seen > 1:
        head += f" (test set seen {outcome.seen} times)"
    return head


def _columns(outcome: FinalOutcome) -> list[tuple[str, list[str]]]:
    rows, plan = outcome.rows, outcome.plan
    names = sorted({k for r in rows for k in r.finalist.params})
    cols: list[tuple[str, list[str]]] = [
        ("rank", [str(i) for i in range(1, len(rows) + 1)]),
        ("trial", [str(r.finalist.trial) for r in rows]),
    ]
    cols += [(n, [fmt_value(r.finalist.params.get(n)) for r in rows]) for n in names]
    if outcome.test_size is not None:
        cols += [
            ("test_acc", [_acc(r.test_mean) for r in rows]),
            ("std", [_acc(r.test_std) for r in rows]),
            ("95% CI (one run)", [_interval(r, outcome) for r in rows]),
            ("per seed", [_per_seed(r.test, r.states, plan.seeds) for r in rows]),
        ]
    if plan.fit_on.value == "train":
        cols += [("val_acc", [_acc(r.val_mean) for r in rows])]
        if outcome.test_size is None:
            cols += [("per seed", [_per_seed(r.val, r.states, plan.seeds) for r in rows])]
    cols += [("search val_acc", [_acc(r.finalist.search_val_acc) for r in rows])]
    return cols


def rich_final_table(outcome: FinalOutcome) -> Table:
    """The table, without a title: the CLI prints title(outcome) above it as one line (a table's
    title would fold at the table's width)."""
    table = Table()
    for name, _ in _columns(outcome):
        table.add_column(name, justify="left" if name == "per seed" else "right")
    cols = _columns(outcome)
    for i in range(len(outcome.rows)):
        table.add_row(*(cells[i] for _, cells in cols))
    return table


def summary_lines(outcome: FinalOutcome) -> list[str]:
    """What the table means, one line each: the best, the caveat of choosing on test, the model."""
    best = outcome.best
    lines = []
    if best is not None:
        seeds = len([s for s in best.states.values() if s is TrialState.COMPLETE])
        if outcome.test_size is not None:
            std = f" ± {best.test_std:.3f}" if best.test_std is not None else ""
            lines.append(
                f"best configuration: trial {best.finalist.trial} ({shown_params(best)}): test accuracy "
                f"{_acc(best.test_mean)}{std} (mean of {seeds} seed{'s' if seeds != 1 else ''})"
            )
            if len(outcome.rows) > 1:
                lines.append(
                    f"choosing the best of {len(outcome.rows)} configurations by test accuracy is itself a (small) "
                    "look at the test set: its number is slightly optimistic"
                )
        else:
            lines.append(
                f"best configuration: trial {best.finalist.trial} ({shown_params(best)}): validation accuracy "
                f"{_acc(best.val_mean)} (mean of {seeds} seed{'s' if seeds != 1 else ''})"
            )
    return lines + outcome.notes


def final_markdown(outcome: FinalOutcome, heading: bool = True) -> str:
    """results.md: the title as a heading (as a bold line without `heading`: a CI summary section has
    its own), the table, then what it means."""
    cols = _columns(outcome)
    top = f"# {title(outcome)}\n" if heading else f"**{title(outcome)}**\n"
    lines = [
        top,
        "| " + " | ".join(n for n, _ in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(c[i] for _, c in cols) + " |" for i in range(len(outcome.rows))]
    text = "\n".join(lines) + "\n"
    extra = summary_lines(outcome)
    if outcome.model_path is not None:
        extra.append(f"model: {outcome.model_path} (hpsearch.load_model)")
    return text + "".join(f"\n{line}\n" for line in extra)


def final_document(outcome: FinalOutcome) -> dict[str, Any]:
    plan = outcome.plan
    rows = []
    for i, r in enumerate(outcome.rows, 1):
        rows.append(
            {
                "rank": i,
                "trial": r.finalist.trial,
                "params": jsonable(r.finalist.params),
                "test_acc_mean": r.test_mean,
                "test_acc_std": r.test_std,
                "test_acc": {str(s): r.test.get(s) for s in plan.seeds if s in r.states},
                "val_acc": {str(s): r.val.get(s) for s in plan.seeds if s in r.states},
                "states": {str(s): st.value for s, st in r.states.items()},
                "search_val_acc": r.finalist.search_val_acc,
            }
        )
    return {
        **plan.to_dict(),
        "test_size": outcome.test_size,
        "test_set_seen": outcome.seen,
        "ranked": rows,
        "best": outcome.best.finalist.trial if outcome.best else None,
        "model": str(outcome.model_path) if outcome.model_path else None,
    }
