"""The Python API (hpsearch.api, hpsearch.results): the README's example run as written, then each
function's known truths: a result holds what its files say (results.json's rows, the ledger),
the best is the top, a run opened read-only reads the same, the smoke spec's sanity checks pass,
a stage started from Python records no command line, progress reaches the CLI's callbacks, bad
arguments fail before any work, and `import hpsearch` loads no torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PATIENCE, ROOT

import hpsearch
from hpsearch.runs.records import TrialResult

SMOKE = ROOT / "configs/smoke.yaml"
TINY = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "synthetic_train": 600, "synthetic_test": 100, "val_size": 100},
    "train": {"epochs": 1, "device": "cpu"},
    "search": {"trials": 2, "space": {"lr": {"low": 1.0e-3, "high": 1.0e-1, "log": True}}},
}


def readme_api_example() -> str:
    """The first ```python block under the README's "## Python API" heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section is not None, 'README.md has no "## Python API" section: the API example to run is missing'
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert block is not None, 'README.md\'s "## Python API" section has no ```python block'
    return block.group(1)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """The README's example executed as written, in a folder holding configs/smoke.yaml: the run
    directory it made, its variables and what it printed."""
    where = tmp_path_factory.mktemp("readme")
    (where / "configs").mkdir()
    shutil.copy(SMOKE, where / "configs/smoke.yaml")
    namespace: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        printed: list[str] = []
        mp.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
        exec(compile(readme_api_example(), "README.md (## Python API)", "exec"), namespace)
    yield where / "runs/demo", namespace, "\n".join(printed)


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A copy of the README's run to add stages to, so each test reads the run as the example left it."""
    return Path(shutil.copytree(run, tmp_path / "demo"))


# --------------------------------------------------------------------------- the README's example


def test_the_readme_example_prints_the_best_trial_of_a_coarse_stage(readme_run: tuple) -> None:
    run, ns, printed = readme_run
    stage = ns["stage"]
    assert isinstance(stage, hpsearch.StageResult)
    assert stage.stage == "coarse"
    assert stage.dir.resolve() == (run / "coarse").resolve()
    assert len(stage.ranked) == 8  # trials=8
    assert printed == str(stage.best)


def test_a_stages_rows_are_its_results_json_and_its_best_is_the_top(readme_run: tuple) -> None:
    run, ns, _ = readme_run
    stage = ns["stage"]
    doc = read_json(run / "coarse/results.json")
    assert stage.rows() == doc["ranked"]
    assert [r.trial for r in stage.ranked] == [row["trial"] for row in doc["ranked"]]
    assert stage.best is stage.ranked[0]
    assert stage.best.val_acc == max(r.val_acc for r in stage.ranked if r.val_acc is not None)
    assert {name: e.to_dict() for name, e in stage.verdicts.items()} == doc["edges"]


def test_a_stage_started_from_python_records_no_command_line(readme_run: tuple) -> None:
    run, _, _ = readme_run
    info = read_json(run / "coarse/run.json")
    assert info["command"] is None  # not the interpreter's sys.argv (pytest's, a kernel's)
    assert info["spec_path"] == "configs/smoke.yaml"  # the file load_spec read, as given


def test_open_run_reads_what_coarse_returned(readme_run: tuple) -> None:
    run, ns, _ = readme_run
    stage = ns["stage"]
    opened = hpsearch.open_run(run)
    assert opened.stages == ["coarse"]
    assert [r.trial for r in opened.ranked()] == [r.trial for r in stage.ranked]
    assert [r.val_acc for r in opened.ranked("coarse")] == [r.val_acc for r in stage.ranked]
    assert opened.rows("coarse") == stage.rows()
    assert opened.spec() == ns["spec"].model_copy(update={"search": ns["spec"].search.model_copy(update={"trials": 8})})
    assert opened.ledger == []


def test_open_run_refuses_a_stage_the_run_has_not_finished(readme_run: tuple) -> None:
    run, _, _ = readme_run
    with pytest.raises(hpsearch.StoreError, match="no finished stage 'refine-1' \\(it has coarse\\)"):
        hpsearch.open_run(run).ranked("refine-1")
    with pytest.raises(hpsearch.StoreError, match="no such run directory"):
        hpsearch.open_run(run / "nowhere")


def test_a_stage_shows_in_a_notebook_as_the_terminals_table(readme_run: tuple) -> None:
    _, ns, _ = readme_run
    stage = ns["stage"]
    page = stage._repr_html_()
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == len(stage.ranked)  # 8 rows: under the 20 a notebook shows
    trials = [re.findall(r"<td[^>]*>(.*?)</td>", row)[1] for row in rows]
    assert trials == [str(r.trial) for r in stage.ranked]
    headers = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", page)
    assert headers[:4] == ["rank", "trial", "state", "val_acc"]
    assert "lr" in headers
    assert "weight_decay" in headers


def test_to_pandas_says_pandas_is_missing(readme_run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ns, _ = readme_run
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install pandas") as e:
        ns["stage"].to_pandas()
    assert e.value.name == "pandas"


def test_to_pandas_has_a_row_per_trial_and_a_column_per_parameter(readme_run: tuple) -> None:
    pytest.importorskip("pandas")
    _, ns, _ = readme_run
    stage = ns["stage"]
    df = stage.to_pandas()
    assert list(df["trial"]) == [r.trial for r in stage.ranked]
    assert list(df["lr"]) == [r.params["lr"] for r in stage.ranked]
    assert {"val_acc_low", "val_acc_high"} <= set(df.columns)
    assert list(hpsearch.open_run(readme_run[0]).to_pandas()["trial"]) == list(df["trial"])


# --------------------------------------------------------------------------- the other functions


def test_refine_runs_the_next_stage_and_open_run_reads_it(readme_run: tuple, tmp_path: Path) -> None:
    run = copy_of(readme_run[0], tmp_path)
    stage = hpsearch.refine(run, trials=4)
    assert stage.stage == "refine-1"
    assert stage.plan is not None
    assert len(stage.ranked) == 4
    assert stage.rows() == read_json(run / "refine-1/results.json")["ranked"]
    assert read_json(run / "refine-1/run.json")["command"] is None
    opened = hpsearch.open_run(run)
    assert opened.stages == ["coarse", "refine-1"]
    assert [r.trial for r in opened.ranked()] == [r.trial for r in stage.ranked]


def test_final_ledger_has_one_test_evaluation_per_run(readme_run: tuple, tmp_path: Path) -> None:
    run = copy_of(readme_run[0], tmp_path)
    fin = hpsearch.final(run, top=2, seeds=2)
    assert isinstance(fin, hpsearch.FinalResult)
    finalists = [r.trial for r in hpsearch.open_run(run).ranked()[:2]]
    assert sorted((e.trial, e.seed) for e in fin.ledger) == sorted((t, s) for t in finalists for s in fin.plan.seeds)
    assert all(e.command is None for e in fin.ledger)
    assert read_json(run / "final/plan.json")["command"] is None
    assert fin.best is fin.ranked[0]
    best = fin.best
    assert best is not None
    scores = [e.test_acc for e in fin.ledger if e.trial == best.finalist.trial]
    assert best.test_mean == pytest.approx(sum(scores) / len(scores))
    assert fin.rows() == read_json(run / "final/results.json")["ranked"]
    assert hpsearch.open_run(run).ledger == fin.ledger
    assert fin.model_path is not None
    assert fin.model_path.is_file()
    assert "<table>" in fin._repr_html_()


def test_sanity_check_on_the_smoke_spec_passes(tmp_path: Path) -> None:
    checks = hpsearch.sanity_check(SMOKE, out=tmp_path / "run")
    assert checks.passed
    assert [c.check for c in checks.checks] == ["initial_loss", "activations", "overfit", "lr_probe"]
    report = read_json(tmp_path / "run/sanity/report.json")
    assert report["passed"] is True
    assert report["run"]["command"] is None
    assert [row["verdict"] for row in checks.rows()] == [c["verdict"] for c in report["checks"]]
    assert checks._repr_html_().count("<table>") == 3  # the checks, the layers, the lr probe


def test_sanity_check_writes_a_spec_built_in_code_with_the_probes_lr_range(tmp_path: Path) -> None:
    from hpsearch.sanity.probe import written_lr_range

    spec = hpsearch.Spec.model_validate(yaml.safe_load(SMOKE.read_text()))
    checks = hpsearch.sanity_check(spec, out=tmp_path / "run", write_spec=tmp_path / "next.yaml")
    assert checks.recommended_lr is not None
    assert checks.written_spec == tmp_path / "next.yaml"
    lr = hpsearch.load_spec(tmp_path / "next.yaml").search.space["lr"]
    assert (lr.low, lr.high) == written_lr_range(*checks.recommended_lr)
    assert read_json(tmp_path / "run/sanity/report.json")["spec_path"] is None


def test_a_spec_built_in_code_runs_and_records_no_spec_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stage = hpsearch.coarse(hpsearch.Spec.model_validate(TINY), out="run", workers=1)
    assert len(stage.ranked) == 2
    info = read_json(tmp_path / "run/coarse/run.json")
    assert info["spec_path"] is None
    assert info["command"] is None


def test_the_spec_load_spec_read_records_its_path_and_a_changed_copy_none(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))  # JSON is YAML
    spec = hpsearch.load_spec(tmp_path / "tiny.yaml")
    hpsearch.coarse(spec, out=tmp_path / "as-read", workers=1)
    hpsearch.coarse(spec.model_copy(update={"name": "copy"}), out=tmp_path / "changed", workers=1)
    assert read_json(tmp_path / "as-read/coarse/run.json")["spec_path"] == str(tmp_path / "tiny.yaml")
    assert read_json(tmp_path / "changed/coarse/run.json")["spec_path"] is None


def test_a_spec_built_in_code_reads_relative_paths_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = hpsearch.Spec.model_validate({**TINY, "data": {"dataset": "npz", "path": "data.npz"}})
    with pytest.raises(hpsearch.DataError, match=re.escape(f"{tmp_path / 'data.npz'}: no such file")):
        hpsearch.coarse(spec, out="run")


class Recorder:
    """A progress object with the CLI's progress bar's methods, keeping what it was told."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, int]] = []
        self.done: list[tuple[int, int]] = []
        self.epochs = 0

    def start(self, trials: int, trial_epochs: int, finished: int = 0) -> None:
        self.starts.append((trials, trial_epochs, finished))

    def trial_done(self, result: TrialResult, done: int, total: int, best: TrialResult | None) -> None:
        self.done.append((done, total))

    def epochs_done(self, count: int) -> None:
        self.epochs += count

    def rung(self, text: str) -> None:
        pass


def test_progress_is_told_what_the_clis_progress_bar_is(tmp_path: Path) -> None:
    progress = Recorder()
    hpsearch.coarse(hpsearch.Spec.model_validate(TINY), out=tmp_path / "run", workers=1, progress=progress)
    assert progress.starts == [(2, 2, 0)]  # 2 trials of 1 epoch
    assert progress.done == [(1, 2), (2, 2)]
    assert progress.epochs == 2


# --------------------------------------------------------------------------- arguments and errors


def test_an_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'trails'"):
        hpsearch.coarse(SMOKE, trails=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hpsearch.coarse(SMOKE, trials=0), "trials=0: must be an integer >= 1"),
        (lambda: hpsearch.coarse(SMOKE, seed=-1), "seed=-1: must be an integer >= 0"),
        (lambda: hpsearch.coarse(SMOKE, workers=True), "workers=True: must be an integer >= 1"),
        (lambda: hpsearch.coarse(SMOKE, out=""), "out='': an empty path"),
        (lambda: hpsearch.coarse(SMOKE, executor="dask"), "executor='dask': must be 'local' or 'ray'"),
        (lambda: hpsearch.coarse(SMOKE, ray_address="10.0.0.5:6379"), "needs executor='ray'"),
        (lambda: hpsearch.refine("runs/x", top_k=0), "top_k=0: must be an integer >= 1"),
        (lambda: hpsearch.final("runs/x", fit_on="test"), "fit_on='test': must be 'train\\+val' or 'train'"),
        (lambda: hpsearch.final("runs/x", again="yes"), "again='yes': must be True or False"),
    ],
)
def test_a_bad_value_is_an_option_error_naming_the_argument(call: Any, message: str) -> None:
    with pytest.raises(hpsearch.OptionError, match=message):
        call()


def test_a_users_mistake_is_an_hpsearch_error_not_a_system_exit(tmp_path: Path) -> None:
    with pytest.raises(hpsearch.SpecError, match="no such file"):
        hpsearch.coarse(tmp_path / "missing.yaml")
    with pytest.raises(hpsearch.StoreError, match="no finished stage"):
        hpsearch.refine(tmp_path)
    with pytest.raises(TypeError, match="a hpsearch.Spec or the path of a spec file, not dict"):
        hpsearch.coarse(TINY)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the package


def loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after running `code`."""
    heavy = "('torch', 'matplotlib', 'ray', 'pydantic')"
    probe = f"{code}\nimport sys; print(' '.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=PATIENCE, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_hpsearch_loads_no_torch_nor_even_pydantic() -> None:
    assert loaded_after("import hpsearch") == []


def test_reading_a_run_through_the_api_loads_no_torch(readme_run: tuple) -> None:
    code = f"import hpsearch; run = hpsearch.open_run({str(readme_run[0])!r}); run.ranked(); run._repr_html_()"
    assert loaded_after(code) == ["pydantic"]


def test_every_public_name_resolves_and_is_documented() -> None:
    missing = [name for name in hpsearch.__all__ if not hasattr(hpsearch, name)]
    assert missing == []
    undocumented = [n for n in hpsearch.__all__ if n != "__version__" and not getattr(hpsearch, n).__doc__]
    assert undocumented == []
    assert set(hpsearch.__all__) <= set(dir(hpsearch))
