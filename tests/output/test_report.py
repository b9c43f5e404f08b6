"""The tables: one number format per column, no number cut on an 80-column terminal, every column
on a wide one, full precision in CSV; the report's epochs column and its unfinished stages; each
accuracy's 95% interval, the trials tied for best, and the rung each trial reached with halving."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import cli
from rich.console import Console

from hpsearch.analysis.rank import TIE_RULE, rank
from hpsearch.errors import StoreError
from hpsearch.output.report import (
    FULL,
    csv_table,
    fmt_column,
    markdown_table,
    results_document,
    rich_table,
    run_report,
    ties_line,
)
from hpsearch.runs.read import StageData, stage_curve_data
from hpsearch.runs.records import CurveData, TrialResult, TrialState
from hpsearch.runs.store import StageStore
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import DataSpec


def trial(
    n: int, val: float | None, state: TrialState = TrialState.COMPLETE, epochs: int = 4, **params: object
) -> TrialResult:
    return TrialResult(
        trial=n,
        state=state,
        params=dict(params),
        val_acc=val,
        train_acc=None if val is None else val + 0.05,
        train_loss=None if val is None else 2.302585 - val,
        epochs_done=epochs,
        wall_time=123.456,
    )


# Values as a search draws them: lr over three decades, a weight decay whose exact-looking and
# random values mixed formats (`1e-04` beside `0.0153`), hidden sizes read back as lists beside the
# tuples of a fresh run.
RANKED = [
    trial(0, 0.4123, lr=3.21e-4, weight_decay=1e-4, hidden=(128,)),
    trial(1, 0.4011, epochs=1, lr=1e-5, weight_decay=0.0153, hidden=[256, 128]),
    trial(2, 0.3876, lr=0.0123, weight_decay=0.0021, hidden=[128]),
    trial(3, None, TrialState.DIVERGED, epochs=1, lr=0.9, weight_decay=1e-4, hidden=[64]),
]
PARAMS = ["hidden", "lr", "weight_decay"]
STAGE_OF = ["refine-1", "coarse", "refine-1", "refine-1"]
PLANNED = [4, 1, 4, 4]
# Every number of RANKED as the table must show it, whole: one format per column.
NUMBERS = {
    "val_acc": ["0.412", "0.401", "0.388"],
    "train_acc": ["0.462", "0.451", "0.438"],
    "lr": ["3.2e-04", "1.0e-05", "1.2e-02", "9.0e-01"],
    "weight_decay": ["1.0e-04", "1.5e-02", "2.1e-03", "1.0e-04"],
    "hidden": ["128", "256x128", "128", "64"],
    "epochs": ["4", "1", "4", "1/4"],
}


def render(table: object, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_each_numeric_column_has_one_format() -> None:
    assert fmt_column([3.21e-4, 1e-5, 0.0123]) == ["3.2e-04", "1.0e-05", "1.2e-02"]  # spans decades
    assert fmt_column([1e-4, 0.0153]) == ["1.0e-04", "1.5e-02"]  # not `1e-04` beside `0.0153`
    assert fmt_column([1e-4, 1e-3, 1e-2]) == ["1e-04", "1e-03", "1e-02"]  # a grid: exact, no padding
    assert fmt_column([0.5, 0.25, 0.125]) == ["0.500", "0.250", "0.125"]  # fixed, same decimals
    assert fmt_column([0.1, 0.5, 1]) == ["0.1", "0.5", "1.0"]
    assert fmt_column([32, 128, 1024]) == ["32", "128", "1024"]
    assert fmt_column([None, math.nan, math.inf, 2.302585, 1.5], sig=4) == ["-", "nan", "inf", "2.303", "1.500"]
    assert fmt_column(["relu", (128,), [256, 128], True]) == ["relu", "128", "256x128", "True"]
    # Losses that span decades keep fixed decimals: 1.743 beside 805.000, not 1.74e+00.
    assert fmt_column([1.743, 805.05, 27.92], sig=4, spans=False) == ["1.743", "805.050", "27.920"]
    assert fmt_column([1.743, 2.5e4], sig=4, spans=False) == ["1.74e+00", "2.50e+04"]


def test_an_80_column_table_cuts_no_number() -> None:
    table = rich_table("all stages", RANKED, PARAMS, stages=STAGE_OF, planned_epochs=PLANNED)
    text = render(table, 80)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    cells = [line.split() for line in text.splitlines()]
    words = {w.strip("│┃") for line in cells for w in line}
    for column, numbers in NUMBERS.items():
        if column != "train_acc":  # left out to fit, and said so
            for number in numbers:
                assert number in words, f"{column}: {number} not shown whole in\n{text}"
    assert "refine-1" in words
    assert "not shown: train_acc, train_loss, time_s (see results.md)" in text
    assert "…" not in render(table, 40)  # too narrow for any layout: numbers fold onto two lines, whole


def test_a_wide_table_shows_every_column() -> None:
    table = rich_table("all stages", RANKED, PARAMS, stages=STAGE_OF, planned_epochs=PLANNED)
    text = render(table, 200)
    header = next(line for line in text.splitlines() if "rank" in line)
    for name in ("rank", "stage", "trial", "state", "val_acc", "train_acc", "train_loss", "epochs", *PARAMS):
        assert name in header
    assert "time_s" in header
    assert "not shown" not in text
    assert "state: the curve label" not in text
    for numbers in NUMBERS.values():
        for number in numbers:
            assert number in text
    assert "123.46" in text
    assert "1/4: stopped after 1 of 4 planned epochs" in text


def test_markdown_uses_the_same_column_formats() -> None:
    md = markdown_table(RANKED, PARAMS, STAGE_OF, PLANNED)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    head = rows[0]
    body = rows[2:]
    assert head.count("state") == 1
    for column, numbers in NUMBERS.items():
        shown = [row[head.index(column)] for row in body]
        assert shown[: len(numbers)] == numbers
    assert "(128,)" not in md
    assert "[128]" not in md


def test_csv_and_json_keep_full_precision_and_the_epochs() -> None:
    rows = list(csv.DictReader(io.StringIO(csv_table(RANKED, PARAMS, STAGE_OF, PLANNED))))
    assert float(rows[0]["lr"]) == 3.21e-4
    assert float(rows[0]["val_acc"]) == 0.4123
    assert rows[1]["hidden"] == "256x128"
    assert [(r["stage"], r["epochs"], r["epochs_planned"]) for r in rows] == [
        ("refine-1", "4", "4"),
        ("coarse", "1", "1"),
        ("refine-1", "4", "4"),
        ("refine-1", "1", "4"),
    ]
    doc = results_document("coarse", RANKED, [], {})
    assert [r["epochs"] for r in doc["ranked"]] == [4, 1, 4, 1]


# --------------------------------------------------------------------------- run_report


def stage_spec(epochs: int, trials: int, seed: int = 0) -> str:
    space = {"lr": {"low": 1e-4, "high": 1.0, "log": True}}
    data = {"name": "r", "train": {"epochs": epochs}, "search": {"trials": trials, "seed": seed, "space": space}}
    return spec_to_yaml(parse_spec(data))


def write_stage(path: Path, spec_yaml: str, results: list[TrialResult], finished: bool) -> None:
    store = StageStore(path)
    store.make_dir()
    store.write_text("spec.yaml", spec_yaml)
    for r in results:
        store.append_trial(r)
    if finished:
        done = [r for r in results if r.state.final]
        store.write_json("results.json", results_document(path.name, done, [], {}))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """The trials of each stage the report's plots are drawn from; nothing drawn (test_refine draws)."""
    seen: dict[str, list[int]] = {}

    def draw(stages: list[StageData], out: Path) -> list[Path]:
        seen.update({s.name: sorted(r.trial for r in s.results) for s in stages})
        return []

    monkeypatch.setattr("hpsearch.output.plots.write_report_plots", draw)
    return seen


def test_report_includes_an_unfinished_stage_with_a_note_and_the_epochs(
    tmp_path: Path, drawn: dict[str, list[int]]
) -> None:
    run = tmp_path / "run"
    coarse = [trial(i, 0.2 + i / 100, epochs=1, lr=10 ** (-3 + i / 2)) for i in range(4)]
    write_stage(run / "coarse", stage_spec(epochs=1, trials=4), coarse, finished=True)
    refine = [
        trial(0, 0.5, epochs=4, lr=1e-2),
        trial(1, None, TrialState.DIVERGED, epochs=2, lr=0.5),
        trial(2, 0.45, epochs=4, lr=3e-3),
        TrialResult(trial=3, state=TrialState.INTERRUPTED, params={"lr": 2e-2}),  # Ctrl-C: not finished
    ]
    write_stage(run / "refine-1", stage_spec(epochs=4, trials=7, seed=1), refine, finished=False)

    outcome = run_report(run)
    assert [s.name for s in outcome.stages] == ["coarse", "refine-1"]
    assert drawn == {"coarse": [0, 1, 2, 3], "refine-1": [0, 1, 2]}
    assert len(outcome.ranked) == 7  # 4 coarse + the 3 finished refine trials
    assert outcome.stage_of[0] == "refine-1"
    assert outcome.title == "all stages (coarse, refine-1 (unfinished: 3 of 7 trials)): 7 trials"
    assert len(outcome.notes) == 1
    assert "refine-1 did not finish" in outcome.notes[0]
    assert f"hpsearch refine {run} --resume" in outcome.notes[0]
    keys = [(s, r.trial) for s, r in zip(outcome.stage_of, outcome.ranked, strict=True)]
    planned = dict(zip(keys, outcome.planned_epochs, strict=True))
    assert planned[("coarse", 0)] == 1
    assert planned[("refine-1", 1)] == 4

    doc = json.loads(outcome.results_path.read_text())
    assert doc["stages"] == ["coarse", "refine-1"]
    assert doc["unfinished"] == {"refine-1": {"trials_done": 3, "trials_planned": 7}}
    assert doc["notes"] == outcome.notes
    epochs = {(r["stage"], r["trial"]): (r["epochs"], r["epochs_planned"]) for r in doc["ranked"]}
    assert epochs[("coarse", 2)] == (1, 1)
    assert epochs[("refine-1", 1)] == (2, 4)  # diverged in its third epoch: trained 2 of 4

    md = (outcome.results_path.parent / "results.md").read_text()
    assert "refine-1 (unfinished: 3 of 7 trials)" in md
    assert "| epochs |" in md
    assert "2/4" in md
    rows = list(csv.DictReader((outcome.results_path.parent / "results.csv").open()))
    assert len(rows) == 7
    assert {r["epochs_planned"] for r in rows if r["stage"] == "coarse"} == {"1"}


def test_report_on_an_interrupted_coarse_alone(tmp_path: Path, drawn: dict[str, list[int]]) -> None:
    run = tmp_path / "run"
    done = [trial(i, 0.3, epochs=2, lr=10 ** (-2 - i)) for i in range(2)]
    write_stage(run / "coarse", stage_spec(epochs=2, trials=20), done, finished=False)
    StageStore(run / "coarse").write_json("run.json", {"spec_path": "configs/my spec.yaml"})
    outcome = run_report(run)
    assert outcome.title == "all stages (coarse (unfinished: 2 of 20 trials)): 2 trials"
    assert "hpsearch coarse 'configs/my spec.yaml' --out" in outcome.notes[0]
    assert "--resume" in outcome.notes[0]


def test_report_without_a_finished_trial_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_stage(run / "coarse", stage_spec(epochs=2, trials=20), [], finished=False)
    with pytest.raises(StoreError, match="no finished stage to report on"):
        run_report(run)


def test_a_stage_stopped_with_partial_results_is_unfinished(tmp_path: Path, drawn: dict[str, list[int]]) -> None:
    # Ctrl-C writes the ranked results of what finished, marked partial, with the planned count.
    run = tmp_path / "run"
    done = [trial(i, 0.3, epochs=2, lr=10 ** (-2 - i)) for i in range(3)]
    write_stage(run / "coarse", stage_spec(epochs=2, trials=20), done, finished=False)
    doc = results_document("coarse", done[:2], [], {"partial": True, "trials_planned": 12})
    StageStore(run / "coarse").write_json("results.json", doc)
    outcome = run_report(run)
    assert outcome.unfinished == {"coarse": (3, 12)}  # every finished record, the plan's count
    assert outcome.title == "all stages (coarse (unfinished: 3 of 12 trials)): 3 trials"


def test_sanity_probe_table_says_what_each_lrs_loss_did() -> None:
    from rich.console import Console

    from hpsearch.output.report import sanity_tables
    from hpsearch.sanity.probe import judge_probe, probe_row
    from hpsearch.sanity.results import SanityReport

    rows = [probe_row(0.1, [2.3] + [2.62] * 99), probe_row(0.01, [2.3] + [1.8] * 99), probe_row(1e-3, [2.3] * 100)]
    check, rows, recommended = judge_probe(rows, 100)
    console = Console(width=200, record=True)
    console.print(sanity_tables(SanityReport([check], [], rows, recommended))[2])
    lines = {
        line.split("│")[1].strip(): line.split("│")[5].strip()
        for line in console.export_text().splitlines()
        if line.count("│") == 6
    }
    assert lines == {"0.1": "rose: lr too high", "0.01": "fell: ok", "0.001": "barely moved: lr too low"}


# --------------------------------------------------------------------------- noise: intervals and ties

N1000 = CurveData(num_classes=10, val_size=1000)
# At n=1000 the first three are within noise of each other, the fourth is not.
TIED = rank(
    [
        trial(0, 0.497, lr=1e-3),
        trial(1, 0.495, lr=2e-3),
        trial(2, 0.488, lr=5e-4),
        trial(3, 0.40, lr=1e-1),
        trial(4, None, TrialState.DIVERGED, epochs=1, lr=3.0),
    ]
)
TIES_LINE = (
    "3 trials are tied for best (marked =; 95% intervals overlap, 1000 validation examples): "
    "the ranking among them is noise"
)


def table_rows(text: str) -> list[list[str]]:
    """A bordered table's body rows, best first: each row's cells, stripped."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def test_the_table_gives_each_accuracy_its_interval_and_marks_the_ties() -> None:
    text = render(rich_table("coarse", TIED, ["lr"], data=N1000), 200)
    header = next(line for line in text.splitlines() if "rank" in line)
    assert "95% CI" in header
    rows = table_rows(text)
    assert rows[0][:5] == ["=1", "0", "complete", "0.497", "0.466-0.528"]
    assert [row[0] for row in rows] == ["=1", "=2", "=3", "4", "5"]
    assert rows[3][4] == "0.370-0.431"
    assert rows[4][4] == "-"  # diverged, no accuracy: no interval
    assert "=: tied for best (95% intervals overlap the best's)" in text
    # Without the count of validation examples there is nothing to say about noise.
    plain = render(rich_table("coarse", TIED, ["lr"]), 200)
    assert "95% CI" not in plain
    assert "=" not in plain


def test_one_line_says_how_many_are_tied_or_that_the_best_leads() -> None:
    assert ties_line(TIED, N1000) == TIES_LINE
    clear = rank([trial(0, 0.60), trial(1, 0.40)])
    assert ties_line(clear, N1000) == (
        "the best trial leads beyond noise: no other trial's 95% interval overlaps its own (1000 validation examples)"
    )
    assert "=" not in render(rich_table("coarse", clear, [], data=N1000), 200)  # one best: nothing to mark
    assert ties_line([trial(0, 0.6), trial(1, None, TrialState.FAILED)], N1000) is None  # nothing to compare
    assert ties_line(TIED, None) is None


def test_markdown_csv_and_json_carry_the_intervals_and_the_ties() -> None:
    md = markdown_table(TIED, ["lr"], data=N1000)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    assert rows[0][:5] == ["rank", "trial", "state", "val_acc", "95% CI"]
    assert rows[2][:5] == ["=1", "0", "complete", "0.497", "0.466-0.528"]
    assert md.rstrip().endswith(TIES_LINE)

    table = list(csv.DictReader(io.StringIO(csv_table(TIED, ["lr"], data=N1000))))
    assert float(table[0]["val_acc_low"]) == pytest.approx(0.46608, abs=1e-5)  # full precision
    assert float(table[0]["val_acc_high"]) == pytest.approx(0.52794, abs=1e-5)
    assert [r["tied_for_best"] for r in table] == ["true", "true", "true", "false", "false"]
    assert (table[4]["val_acc_low"], table[4]["val_acc_high"]) == ("", "")
    assert "rung" not in table[0]  # no successive halving: no rung column

    doc = json.loads(json.dumps(results_document("coarse", TIED, [], {}, N1000)))
    assert doc["ties"] == {"count": 3, "trials": [0, 1, 2], "val_size": 1000, "rule": TIE_RULE}
    assert doc["ranked"][0]["val_acc_interval"] == pytest.approx([0.46608, 0.52794], abs=1e-5)
    assert doc["ranked"][4]["val_acc_interval"] is None
    assert [r["tied_for_best"] for r in doc["ranked"]] == [True, True, True, False, False]
    assert "rung" not in doc["ranked"][0]


def test_narrow_terminals_keep_the_interval_as_long_as_they_can_and_the_tie_marks_always() -> None:
    table = rich_table("coarse", TIED, ["lr"], data=N1000)
    at60 = render(table, 60)
    assert "0.466-0.528" in at60  # the interval goes last: after train_acc, train_loss, time_s
    assert "not shown: train_acc, train_loss, time_s (see results.md)" in " ".join(at60.split())  # caption wraps
    at40 = render(table, 40)
    assert "not shown: 95% CI, train_acc, train_loss, time_s" in " ".join(at40.split())
    assert "…" not in at40
    assert [line.split()[0] for line in at40.splitlines() if line.strip().startswith("=")][:3] == ["=1", "=2", "=3"]


# Successive halving, eta 3 to 9 epochs: two reached the last rung, one stopped at rung 1, one at rung 0.
HALVED = rank(
    [
        replace(trial(0, 0.50, epochs=9, lr=1e-3), rung=2),
        replace(trial(1, 0.49, epochs=9, lr=2e-3), rung=2),
        replace(trial(2, 0.47, TrialState.STOPPED, epochs=3, lr=3e-3), rung=1),
        replace(trial(3, 0.30, TrialState.STOPPED, epochs=1, lr=1e-1), rung=0),
    ]
)


def test_with_halving_every_table_shows_the_rung_and_a_stopped_trials_epochs() -> None:
    planned = [9, 9, 9, 9]
    text = render(rich_table("coarse", HALVED, ["lr"], planned_epochs=planned, data=N1000), 200)
    header = next(line for line in text.splitlines() if "rank" in line)
    assert "rung" in header
    rows = table_rows(text)
    rung, epochs = [c.strip() for c in header.split("┃")[1:-1]].index("rung"), 8
    assert [row[rung] for row in rows] == ["2", "2", "1", "0"]
    assert [row[epochs] for row in rows] == ["9", "9", "3/9", "1/9"]
    assert "epochs 3/9: trained 3 of 9 planned epochs, then stopped by successive halving" in text
    # Tied at the last rung only: trial 2's 0.47 would overlap 0.50, but it trained 3 epochs, not 9.
    assert [row[0] for row in rows] == ["=1", "=2", "3", "4"]
    assert ties_line(HALVED, N1000) == (
        "2 trials at rung 2 are tied for best (marked =; 95% intervals overlap, 1000 validation examples): "
        "the ranking among them is noise"
    )
    assert rich_table("coarse", HALVED, ["lr"], data=N1000).table(FULL).rows[2].style == "dim"  # stopped

    md = markdown_table(HALVED, ["lr"], planned_epochs=planned, data=N1000)
    assert "| rung | epochs |" in md
    assert "| 1 | 3/9 |" in md
    table = list(csv.DictReader(io.StringIO(csv_table(HALVED, ["lr"], planned_epochs=planned, data=N1000))))
    assert [(r["rung"], r["epochs"], r["state"]) for r in table] == [
        ("2", "9", "complete"),
        ("2", "9", "complete"),
        ("1", "3", "stopped"),
        ("0", "1", "stopped"),
    ]
    doc = results_document("coarse", HALVED, [], {}, N1000, planned)
    assert [(r["rung"], r["epochs"], r["epochs_planned"]) for r in doc["ranked"]] == [
        (2, 9, 9),
        (2, 9, 9),
        (1, 3, 9),
        (0, 1, 9),
    ]
    assert doc["ties"]["trials"] == [0, 1]


def test_the_validation_count_is_what_run_json_recorded(tmp_path: Path) -> None:
    # An npz with its own x_val: data.val_size is not what the accuracies were measured on.
    npz = DataSpec(dataset="npz", path="d.npz")
    assert stage_curve_data(tmp_path, npz) == CurveData(None, 1000)  # no run.json: the spec's
    StageStore(tmp_path).write_json("run.json", {"num_classes": 7, "val_size": 437})
    assert stage_curve_data(tmp_path, npz) == CurveData(7, 437)
    StageStore(tmp_path).write_json("run.json", {"num_classes": True, "val_size": "many"})
    assert stage_curve_data(tmp_path, npz) == CurveData(None, 1000)  # not counts: ignored


def test_the_report_ranks_ties_across_stages_by_the_recorded_count(tmp_path: Path, drawn: dict[str, list[int]]) -> None:
    run = tmp_path / "run"
    coarse = [trial(0, 0.49, epochs=1, lr=1e-3), trial(1, 0.30, epochs=1, lr=1e-1)]
    write_stage(run / "coarse", stage_spec(epochs=1, trials=2), coarse, finished=True)
    StageStore(run / "coarse").write_json("run.json", {"num_classes": 10, "val_size": 200})
    refine = [trial(0, 0.50, epochs=4, lr=2e-3), trial(1, 0.20, epochs=4, lr=5e-4)]
    write_stage(run / "refine-1", stage_spec(epochs=4, trials=2, seed=1), refine, finished=True)

    outcome = run_report(run)
    assert outcome.data.val_size == 200
    doc = json.loads(outcome.results_path.read_text())
    # Trial 0 of each stage: 0.50 and 0.49 of 200 are within noise of each other; trial numbers repeat.
    assert doc["ties"] | {"rule": ""} == {
        "count": 2,
        "trials": [0, 0],
        "stages": ["refine-1", "coarse"],
        "val_size": 200,
        "rule": "",
    }
    assert [(r["stage"], r["trial"], r["tied_for_best"]) for r in doc["ranked"]][:3] == [
        ("refine-1", 0, True),
        ("coarse", 0, True),
        ("coarse", 1, False),
    ]
    md = (outcome.results_path.parent / "results.md").read_text()
    assert "2 trials are tied for best (marked =; 95% intervals overlap, 200 validation examples)" in md

    res = cli("report", str(run))
    assert res.returncode == 0, res.stderr
    rows = [row[:3] for row in table_rows(res.stdout)]
    assert rows[:3] == [["=1", "refine-1", "0"], ["=2", "coarse", "0"], ["3", "coarse", "1"]]
    assert res.stderr.splitlines()[0].startswith("2 trials are tied for best")


def test_coarse_and_refine_print_the_tie_line_on_stderr_after_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hpsearch.cli.render import render_outcome
    from hpsearch.stages.base import StageOutcome

    render_outcome(StageOutcome(tmp_path, "coarse", TIED, [], ["lr"], data=N1000))
    out, err = capsys.readouterr()
    assert table_rows(out)[0][:2] == ["=1", "0"]
    assert TIES_LINE not in out  # results on stdout; what to make of them on stderr
    assert err.splitlines()[0] == TIES_LINE
