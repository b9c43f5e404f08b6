"""hpsearch in CI: docs/ci.md's workflow installs and runs as written, gates exit with their codes, the
step summary gets each command's table, sanity-check writes JUnit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PATIENCE, ROOT, WIDTH, cli

from hpsearch.output.ci import SUMMARY_ENV


def workflow_steps() -> list[dict[str, Any]]:
    """The steps of docs/ci.md's workflow, in order."""
    text = (ROOT / "docs/ci.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    steps: list[dict[str, Any]] = yaml.safe_load(block)["jobs"]["search"]["steps"]
    return steps


@dataclass(frozen=True)
class Runner:
    checkout: Path  # where the steps run
    python: Path  # the runner's Python: a venv
    env: dict[str, str]


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    """What a GitHub runner has after actions/checkout and setup-python: a copy of this checkout, and
    a Python of its own (a venv) with pip, where the steps run. Offline: the venv sees the packages of
    the Python running the tests (torch, typer, ...; an hpsearch there too, which is why the test
    checks the venv's own), pip is told to use no index, so an install line that needs a download
    fails instead of downloading, and setuptools comes from here instead of an isolated build
    environment (which would download it)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(*NOT_IN_A_CHECKOUT))
    python = tmp_path / "python"
    venv.create(python, with_pip=False)
    # This interpreter's package folders, as site dirs of the venv (their .pth files read too); not
    # system_site_packages, which from inside a venv would give the base Python's, without torch.
    own = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    site_dir = next((python / "lib").glob("python*/site-packages"))
    (site_dir / "tested_python.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in own))
    # The runner's `pip`: this environment's pip run by the venv's Python, so it installs into the
    # venv (ensurepip's own copy would bring an old setuptools that hides this one from torch).
    pip = python / "bin/pip"
    pip.write_text(
        f"#!{python / 'bin/python'}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n"
    )
    pip.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # hpsearch only as installed
    env |= {
        "PATH": f"{python / 'bin'}:{os.defpath}",  # no other hpsearch on PATH
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's inverted spelling of --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "COLUMNS": str(WIDTH),
        SUMMARY_ENV: str(tmp_path / "summary.md"),
    }
    return Runner(checkout, python, env)


# Not part of a fresh checkout: what a developer's working tree builds and runs.
NOT_IN_A_CHECKOUT = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".benchmarks")


def test_the_ci_workflow_installs_and_runs_as_written(runner: Runner) -> None:
    checkout, python, env = runner.checkout, runner.python, runner.env
    steps = [s for s in workflow_steps() if "run" in s]
    lines = [line for s in steps for line in s["run"].splitlines()]
    assert [line.split()[1] for line in lines if line.startswith("hpsearch ")] == ["sanity-check", "coarse", "final"]
    for step in steps:
        # GitHub's `bash` shell on Linux: bash --noprofile --norc -eo pipefail {0}
        res = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        assert res.returncode == 0, f"{step['name']}:\n{step['run']}\n{res.stdout}\n{res.stderr}"
        if step["name"].startswith("Install"):
            installed = next((python / "lib").glob("python*/site-packages/hpsearch"), None)
            assert installed is not None, f"{step['run']} installed no hpsearch into the runner's Python"
            # This checkout's, not another hpsearch:
            assert (installed / "cli/app.py").read_bytes() == (ROOT / "hpsearch/cli/app.py").read_bytes()
            assert (python / "bin/hpsearch").is_file()  # the command the next steps run
    # JUnit: one testcase per check, none failed
    suite = ET.parse(checkout / "reports/sanity.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["initial_loss", "activations", "overfit", "lr_probe"]
    assert suite.get("failures") == "0"
    assert all(c.find("failure") is None for c in cases)
    # The step summary: each command's section and table, in order
    text = Path(env[SUMMARY_ENV]).read_text()
    heads = [line for line in text.splitlines() if line.startswith("### ")]
    assert heads[0].startswith("### hpsearch sanity-check: smoke (passed)")
    assert heads[1] == "### hpsearch coarse: runs/ci"
    assert heads[2] == "### hpsearch final: runs/ci"
    assert "| check | verdict | measured | diagnosis |" in text
    assert "| rank | trial | state | val_acc | 95% CI |" in text
    assert "| rank | trial | lr | weight_decay | test_acc | std |" in text
    assert (checkout / "runs/ci/final/model.pt").is_file()


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
    assert why_red(summary) == f"exit 5: {error_line(res)}"  # the run's page says why it is red
    # The same finished stage, read back (--resume trains nothing), with the accuracy bar: 4 wins.
    both = cli(*args, "--resume", "--fail-on-edge", "--fail-under", "0.5")
    assert both.returncode == 4
    assert "--fail-under 0.5: the best validation accuracy of coarse is 0." in both.stderr.strip().splitlines()[-1]
    assert why_red(summary) == f"exit 4: {error_line(both)}"
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
    assert "warning: $GITHUB_STEP_SUMMARY: " in res.stderr
    assert "cannot append the summary" in res.stderr
    suite = ET.parse(tmp_path / "r/junit.xml").getroot().find("testsuite")
    assert suite is not None
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    assert failed["initial_loss"] is not None
    assert "FAIL" in (failed["initial_loss"].text or "")
    assert int(suite.get("failures") or 0) == sum(f is not None for f in failed.values()) >= 1


def test_the_step_summary_says_why_a_stage_with_no_completed_trial_is_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "hot.yaml"
    text = (ROOT / "configs/smoke.yaml").read_text()
    spec.write_text(
        text.replace("lr: {low: 1.0e-4, high: 1.0, log: true}", "lr: {low: 1.0e+4, high: 1.0e+5, log: true}")
    )
    summary = tmp_path / "summary.md"
    monkeypatch.setenv(SUMMARY_ENV, str(summary))
    res = cli("coarse", str(spec), "--trials", "2", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert res.returncode == 3, res.stderr
    assert error_line(res).startswith("no trial of coarse completed (2 diverged)")
    assert why_red(summary) == f"exit 3: {error_line(res)}"


def error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The command's last line on stderr, its `error: ` taken off."""
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), res.stderr
    return line.removeprefix("error: ")


def why_red(summary: Path) -> str | None:
    """What the step summary's last section says about why the step failed: its `:x:` line."""
    section = summary.read_text().split("\n### ")[-1]
    lines = [line for line in section.splitlines() if line.startswith(":x: ")]
    assert len(lines) <= 1, section
    return lines[0].removeprefix(":x: ") if lines else None
