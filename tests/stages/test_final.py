"""`hpsearch final`: finalists trained with several seeds, the test set scored once per run and
logged in the ledger, a second look refused, resume without a second evaluation, the kept model
loaded back with the same predictions, a pickle with code in it refused, data without a test split."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import StopAfter, cli

import hpsearch
from hpsearch.data import final_dataset
from hpsearch.errors import StageStopped, StoreError
from hpsearch.output.ci import SUMMARY_ENV
from hpsearch.runs.final import LEDGER
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import FinalOptions, FitOn
from hpsearch.stages.final import run_final

SPEC = """\
name: fin
data: {{dataset: synthetic, synthetic_train: 800, synthetic_test: {test}, val_size: 300}}
model: {{kind: mlp, hidden: [16]}}
train: {{epochs: 2, batch_size: 100, optimizer: momentum, lr_decay: 0.9, device: cpu}}
search:
  trials: {trials}
  seed: 3
  space:
    lr: {{low: 1.0e-3, high: 0.3, log: true}}
    weight_decay: {{low: 1.0e-6, high: 1.0e-2, log: true}}
"""


def _coarse(tmp: Path, test: int = 300, trials: int = 5) -> Path:
    spec = tmp / "fin.yaml"
    spec.write_text(SPEC.format(test=test, trials=trials))
    run = tmp / "run"
    res = cli("coarse", str(spec), "--out", str(run), "--population", "1")
    assert res.returncode == 0, res.stderr
    return run


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _coarse(tmp_path_factory.mktemp("searched"))


@pytest.fixture
def run(searched: Path, tmp_path: Path) -> Path:
    """A fresh copy of the searched run for each test."""
    return Path(shutil.copytree(searched, tmp_path / "run"))


def ledger(run: Path) -> list[dict[str, Any]]:
    path = run / "final" / LEDGER
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ranked_trials(run: Path, stage: str = "coarse") -> list[dict[str, Any]]:
    return [r for r in json.loads((run / stage / "results.json").read_text())["ranked"] if r["state"] == "complete"]


def test_final_trains_finalists_with_seeds_scores_the_test_set_once_and_keeps_the_model(run: Path) -> None:
    res = cli("final", str(run), "--top", "2", "--seeds", "2")
    assert res.returncode == 0, res.stderr
    assert "final: 2 configurations x 2 seeds, 2 epochs on train + validation, scored once on 300 test" in res.stdout
    # The progress bar names what trains: final's runs, not a search's trials.
    bar = [line for line in res.stderr.splitlines() if "4/4" in line]
    assert len(bar) == 1, res.stderr
    assert bar[0].split()[:1] == ["final"], res.stderr
    assert "run 4/4" in bar[0]
    entries = ledger(run)
    best_two = [r["trial"] for r in ranked_trials(run)[:2]]
    assert sorted((e["trial"], e["seed"]) for e in entries) == sorted((t, s) for t in best_two for s in (3, 4))
    assert all(e["attempt"] == 1 and e["test_size"] == 300 and e["fit_on"] == "train+val" for e in entries)
    assert all(e["command"][1:] == ["final", str(run), "--top", "2", "--seeds", "2"] for e in entries)
    doc = json.loads((run / "final/results.json").read_text())
    rows = doc["ranked"]
    for row in rows:  # the table's mean is the mean of the ledger's numbers for that configuration
        accs = [e["test_acc"] for e in entries if e["trial"] == row["trial"]]
        assert row["test_acc_mean"] == pytest.approx(sum(accs) / len(accs))
    assert rows[0]["test_acc_mean"] >= rows[1]["test_acc_mean"]
    best = rows[0]
    assert f"best configuration: trial {best['trial']}" in res.stderr
    assert "is itself a (small) look at the test set" in res.stderr
    # The kept network: the best configuration's first seed (no validation held out to choose by).
    info = json.loads((run / "final/model.json").read_text())
    assert (info["trial"], info["seed"]) == (best["trial"], 3)
    assert info["test_acc"] == best["test_acc"]["3"]
    assert not (run / "final/models").exists()  # the other runs' weights are not kept

    # Loaded back: the predictions measured when it was saved.
    model, preprocess = hpsearch.load_model(run)
    assert not model.training
    _, test = final_dataset(load_spec(run / "coarse/spec.yaml").data, None, None, True)
    assert test is not None
    with torch.no_grad():
        predictions = model(preprocess(test[0])).argmax(1)
    assert predictions[:64].tolist() == info["predictions"]["classes"]
    assert float((predictions == test[1]).double().mean()) == info["test_acc"]
    assert info["input_dtype"] == "uint8"
    assert info["num_classes"] == 10
    assert info["torch"] == torch.__version__
    assert info["spec"]["train"]["lr"] == info["params"]["lr"]  # the resolved spec: searched values applied


def test_a_model_pt_that_is_not_a_plain_state_dict_is_refused_unrun(tmp_path: Path) -> None:
    final = tmp_path / "final"
    final.mkdir()
    (final / "model.json").write_text(json.dumps({"model": {"kind": "mlp", "hidden": [4]}, "preprocess": {}}))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    (final / "model.pt").write_bytes(pickle.dumps({"weight": Payload()}, protocol=2))
    with pytest.raises(StoreError, match=r"model\.pt: refused: not a plain state_dict"):
        hpsearch.load_model(tmp_path)
    assert not marker.exists()
    torch.save({"layers": [torch.zeros(2)]}, final / "model.pt")  # loads safely, but is no state_dict
    with pytest.raises(StoreError, match="not a plain state_dict"):
        hpsearch.load_model(tmp_path)
    (final / "model.pt").unlink()
    with pytest.raises(StoreError, match=r"model\.pt: no such file"):
        hpsearch.load_model(tmp_path)


def test_a_second_final_is_refused_unless_again_and_then_says_so(run: Path) -> None:
    assert cli("final", str(run), "--top", "1", "--seeds", "1").returncode == 0
    first_model = (run / "final/model.pt").read_bytes()
    again = cli("final", str(run), "--top", "1", "--seeds", "1")
    assert again.returncode == 1
    last = again.stderr.strip().splitlines()[-1]
    assert "the test set was already evaluated by 1 final (last 20" in last
    assert "--again" in last
    assert len(ledger(run)) == 1  # refused before anything was evaluated
    res = cli("final", str(run), "--top", "2", "--seeds", "1", "--again")
    assert res.returncode == 0, res.stderr
    assert "(test set seen 2 times)" in res.stdout
    assert [e["attempt"] for e in ledger(run)] == [1, 2, 2]
    assert (run / "final/model-attempt-1.pt").read_bytes() == first_model  # the earlier model is kept


def test_an_interrupted_final_resumes_without_scoring_any_run_twice(run: Path) -> None:
    options = FinalOptions(top=2, seeds=2, execution=FinalOptions().execution)
    with pytest.raises(StageStopped):
        run_final(run, options, progress=StopAfter(3))
    assert len(ledger(run)) == 3
    # A crash after a run's record and before its score: the score is taken on resume, once.
    lines = (run / "final" / LEDGER).read_text().splitlines(keepends=True)
    # ... and the append it was doing was cut mid-line by the crash: skipped, and the next line starts fresh.
    (run / "final" / LEDGER).write_text("".join(lines[:-1]) + '{"attempt": 1, "trial": ')
    refused = cli("final", str(run))
    assert refused.returncode == 1
    assert "--resume finishes it" in refused.stderr
    other = cli("final", str(run), "--resume", "--seeds", "3")
    assert other.returncode == 1
    assert "cannot resume with --seeds 3: the interrupted final planned 2" in other.stderr
    res = cli("final", str(run), "--resume")
    assert res.returncode == 0, res.stderr
    text = (run / "final" / LEDGER).read_text().splitlines()
    assert text[2] == '{"attempt": 1, "trial": '  # the torn line, left as it was
    keys = [(e["trial"], e["seed"]) for e in map(json.loads, text[:2] + text[3:])]
    assert len(keys) == len(set(keys)) == 4
    assert "resuming: 3 of 4 runs already finished, 1 to run" in res.stderr
    nothing = cli("final", str(run), "--resume")
    assert nothing.returncode == 0
    assert "nothing to resume" in nothing.stderr


def test_fit_on_train_with_the_search_seed_reproduces_the_search_trial(run: Path, tmp_path: Path) -> None:
    """Held-out validation, the stage's epochs, seed = the search's: the same init, batches and
    data as the search trained the trial with (one at a time), so the same validation accuracy; in
    populations (one per seed: a seed fixes the batch order) the same up to float rounding."""
    other = Path(shutil.copytree(run, tmp_path / "other"))
    res = cli("final", str(run), "--top", "3", "--seeds", "2", "--fit-on", "train", "--population", "1")
    assert res.returncode == 0, res.stderr
    assert "val_acc" in res.stdout
    search = {r["trial"]: r["val_acc"] for r in ranked_trials(run)}
    rows = json.loads((run / "final/results.json").read_text())["ranked"]
    assert {r["trial"]: r["val_acc"]["3"] for r in rows} == {r["trial"]: search[r["trial"]] for r in rows}
    assert all(e["fit_on"] == "train" and e["val_acc"] is not None for e in ledger(run))
    assert (
        cli("final", str(other), "--top", "3", "--seeds", "2", "--fit-on", "train", "--population", "3").returncode == 0
    )
    one = {(e["trial"], e["seed"]): e["test_acc"] for e in ledger(run)}
    together = {(e["trial"], e["seed"]): e["test_acc"] for e in ledger(other)}
    assert one.keys() == together.keys()
    assert len(one) == 6
    assert all(abs(one[k] - together[k]) <= 2 / 300 for k in one)  # float rounding may flip an example


def test_data_without_a_test_split(tmp_path: Path) -> None:
    run = _coarse(tmp_path, test=0, trials=2)
    res = cli("final", str(run), "--top", "1", "--seeds", "1")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "the data has no test split" in last
    assert "--fit-on train" in last
    res = cli("final", str(run), "--top", "2", "--seeds", "1", "--fit-on", "train")
    assert res.returncode == 0, res.stderr
    assert "ranked by validation accuracy (no test split)" in res.stdout
    assert "nothing was tested" in res.stderr
    assert ledger(run) == []  # no test evaluation: nothing in the ledger
    model, preprocess = hpsearch.load_model(run)
    assert json.loads((run / "final/model.json").read_text())["predictions"]["split"] == "val"


def test_final_fail_under_gate(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv(SUMMARY_ENV, str(summary))
    res = cli("final", str(run), "--top", "1", "--seeds", "1", "--fail-under", "0.99")
    assert res.returncode == 4
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --fail-under 0.99: the best mean test accuracy is")
    assert f":x: exit 4: {line.removeprefix('error: ')}" in summary.read_text().splitlines()  # why CI is red
    assert (run / "final/model.pt").is_file()  # the work is kept; only the exit code says no


def test_final_needs_a_finished_stage(tmp_path: Path) -> None:
    res = cli("final", str(tmp_path / "nothing"))
    assert res.returncode == 1
    assert "no finished stage to take finalists from" in res.stderr


def test_fit_on_values() -> None:
    assert [f.value for f in FitOn] == ["train+val", "train"]
    res = cli("final", "x", "--fit-on", "test")
    assert res.returncode == 2
    assert "'test' is not one of" in res.stderr


USER_NET = """\
import torch.nn as nn


def tiny(input_shape, num_classes, hidden=8):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_a_user_network_is_kept_with_its_code_and_loads_after_the_file_changed(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(USER_NET)
    spec = tmp_path / "own.yaml"
    spec.write_text(
        SPEC.format(test=200, trials=2).replace(
            "model: {kind: mlp, hidden: [16]}", "model: {kind: python, factory: nets.py:tiny}"
        )
    )
    run = tmp_path / "run"
    assert cli("coarse", str(spec), "--out", str(run)).returncode == 0
    res = cli("final", str(run), "--top", "1", "--seeds", "1")
    assert res.returncode == 0, res.stderr
    info = json.loads((run / "final/model.json").read_text())
    assert info["factory"]["reference"].endswith("nets.py:tiny")
    assert info["factory"]["source"] == USER_NET
    (tmp_path / "nets.py").write_text("raise SystemExit('not this code')\n")  # edited since: the kept text is used
    model, preprocess = hpsearch.load_model(run / "final/model.pt")
    _, test = final_dataset(load_spec(run / "coarse/spec.yaml").data, None, None, True)
    assert test is not None
    with torch.no_grad():
        predictions = model(preprocess(test[0][:64])).argmax(1)
    assert predictions.tolist() == info["predictions"]["classes"]


def test_refine_gate_and_the_step_summary_of_refine_report_and_final(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    res = cli("refine", str(run), "--trials", "2", "--epochs", "1", "--fail-under", "0.99")
    assert res.returncode == 4
    assert "--fail-under 0.99: the best validation accuracy of refine-1 is" in res.stderr.strip().splitlines()[-1]
    assert cli("report", str(run)).returncode == 0
    res = cli("final", str(run), "--top", "1", "--seeds", "1", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    assert "final: 1 configuration x 1 seed, 1 epoch on train + validation" in res.stdout
    assert json.loads((run / "final/plan.json").read_text())["stage"] == "refine-1"  # the latest stage
    heads = [line for line in summary.read_text().splitlines() if line.startswith("### ")]
    assert heads == [f"### hpsearch refine-1: {run}", f"### hpsearch report: {run}", f"### hpsearch final: {run}"]
