"""What CI systems read: the GitHub Actions step summary (Markdown appended to $GITHUB_STEP_SUMMARY)
and JUnit XML for `sanity-check --junit FILE`. No torch.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.errors import StoreError
from hpsearch.runs.store import atomic_write_text

if TYPE_CHECKING:
    from hpsearch.sanity.results import SanityReport

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def append_step_summary(markdown: str) -> str | None:
    """Append to the file $GITHUB_STEP_SUMMARY names, when it is set. Returns a warning line when it
    cannot be written (the command's own results are not affected), else None."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    except OSError as e:
        return f"${SUMMARY_ENV}: {path}: cannot append the summary: {e.strerror or e}"
    return None


def summary_section(heading: str, body: str, warnings: list[str], failed: str | None = None) -> str:
    """A step summary section: a heading, why the step failed (`failed`: the exit code and the line
    the command ended with; first, where the red step's page is read), the table, then the warnings
    as a list."""
    parts = [f"### {heading}\n", *([f":x: {failed}\n"] if failed else []), body.rstrip("\n") + "\n"]
    if warnings:
        parts.append("\n" + "\n".join(f"- :warning: {w}" for w in warnings) + "\n")
    return "\n".join(parts)


def sanity_markdown(report: SanityReport) -> str:
    lines = ["| check | verdict | measured | diagnosis |", "|---|---|---|---|"]
    for c in report.checks:
        cells = [c.check, c.verdict.value, c.measured, c.diagnosis]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def junit_xml(report: SanityReport, name: str, seconds: float) -> str:
    """One <testcase> per check: a FAIL is a <failure>, a WARN passes with its diagnosis as output."""
    failures = sum(1 for c in report.checks if c.verdict.value == "FAIL")
    suite = ET.Element(
        "testsuite",
        name=f"hpsearch sanity-check {name}",
        tests=str(len(report.checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"hpsearch.sanity.checks.{name}", name=c.check)
        text = f"{c.verdict.value}: {c.measured}\n{c.diagnosis}"
        if c.verdict.value == "FAIL":
            failure = ET.SubElement(case, "failure", message=c.diagnosis, type="SanityCheckFailed")
            failure.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: Path, text: str) -> None:
    """Write the report, making its folder if needed (as pytest's --junitxml does)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"--junit {path}: cannot create its folder: {e.strerror or e}") from None
    if path.is_dir():
        raise StoreError(f"--junit {path}: is a folder; give a file name, e.g. {path / 'sanity.xml'}")
    atomic_write_text(path, text)
