"""hpsearch in CI: docs/ci.md's workflow commands run as written, gates exit with their codes, the
step summary gets each command's table, sanity-check writes JUnit."""

from __future__ import annotations

import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, cli

from hpsearch.ci import SUMMARY_ENV


def workflow_commands() -> list[list[str]]:
    """The hpsearch commands of docs/ci.md's workflow, in order (pip installs are the runner's)."""
    text = (ROOT / "docs/ci.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    workflow = yaml.safe_load(block)
    steps = workflow["jobs"]["search"]["steps"]
    lines = [line for s in steps if "run" in s for line in s["run"].splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("hpsearch ")]


def test_the_ci_workflow_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv(SUMMARY_ENV, str(summary))
    commands = workflow_commands()
    assert [c[1] for c in commands] == ["sanity-check", "coarse", "final"]
    for command in commands:
        res = cli(*command[1:], cwd=tmp_path)
        assert res.returncode == 0, f"{shlex.join(command)}\n{res.stderr}"
    # JUnit: one testcase per check, none failed
    suite = ET.parse(tmp_path / "reports/sanity.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["initial_loss", "activations", "overfit", "lr_probe"]
    assert suite.get("failures") == "0" and all(c.find("failure") is None for c in cases)
    # The step summary: each command's section and table, in order
    text = summary.read_text()
    heads = [line for line in text.splitlines() if line.startswith("### ")]
    assert heads[0].startswith("### hpsearch sanity-check: smoke (passed)")
    assert heads[1] == "### hpsearch coarse: runs/ci"
    assert heads[2] == "### hpsearch final: runs/ci"
    assert "| check | verdict | measured | diagnosis |" in text
    assert "| rank | trial | state | val_acc | 95% CI |" in text
    assert "| rank | trial | lr | weight_decay | test_acc | std |" in text
    assert (tmp_path / "runs/ci/final/model.pt").is_file()


def test_gates_exit_4_below_the_bar_and_5_outside_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "low.yaml"
    text = (ROOT / "configs/smoke.yaml").read_text()
    spec.write_text(
        text.replace("lr: {low: 1.0e-4, high: 1.0, log: true}", "lr: {low: 1.0e-7, high: 1.0e-6, log: true}")
    )
    summary = tmp_path / "summary.md"
    monkeypatch.setenv(SUMMARY_ENV, str(summary))
    args = ["coarse", str(spec), "--trials", "4", "--epochs", "1", "--out", str(tmp_path / "run")]
    res = cli(*args, "--fail-on-edge")
    assert res.returncode == 5
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --fail-on-edge: the optimum lies outside the searched range of lr (nothing_learned)")
    )
    assert (tmp_path / "run/coarse/results.json").is_file()  # the results are written all the same
    assert "- :warning: lr: nothing learned" in summary.read_text()
    # The same finished stage, read back (--resume trains nothing), with the accuracy bar: 4 wins.
    both = cli(*args, "--resume", "--fail-on-edge", "--fail-under", "0.5")
    assert both.returncode == 4
    assert "--fail-under 0.5: the best validation accuracy of coarse is 0." in both.stderr.strip().splitlines()[-1]
    assert cli(*args, "--resume", "--fail-under", "0.05").returncode == 0
    assert cli(*args, "--fail-under", "1.5").returncode == 2  # not an accuracy: a usage error


def test_junit_reports_a_failed_check_and_an_unwritable_summary_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ndata: {dataset: synthetic, synthetic_train: 600, val_size: 200}\n"
        "model: {hidden: [16], init: small_random, init_std: 10}\ntrain: {device: cpu}\n"
        "sanity: {overfit_epochs: 5, probe_iterations: 5}\n"
    )
    monkeypatch.setenv(SUMMARY_ENV, str(tmp_path / "no/such/folder/summary.md"))
    res = cli("sanity-check", str(spec), "--out", str(tmp_path / "run"), "--junit", str(tmp_path / "r/junit.xml"))
    assert res.returncode == 1
    assert "warning: $GITHUB_STEP_SUMMARY: " in res.stderr and "cannot append the summary" in res.stderr
    suite = ET.parse(tmp_path / "r/junit.xml").getroot().find("testsuite")
    assert suite is not None
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    assert failed["initial_loss"] is not None and "FAIL" in (failed["initial_loss"].text or "")
    assert int(suite.get("failures") or 0) == sum(f is not None for f in failed.values()) >= 1
