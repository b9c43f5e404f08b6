"""What a user sees from every command on configs/smoke.yaml, compared with what it was when recorded
(tests/golden/), so that a change meant to leave behaviour alone (moving modules into sub-packages)
shows that nothing a user sees changed: no table, warning, verdict, number, message, exit code,
option or file name.

The commands run in this process (helpers.cli: typer's CliRunner, stdout and stderr apart, a
200-column terminal without colour), in a user's order, on one run directory in a temporary
directory that holds a copy of configs/smoke.yaml: sanity-check, coarse --dry-run, coarse,
refine --dry-run, refine, report, final. Each case's golden file holds its command line, exit
code, stdout, stderr and the files it wrote (names, relative to that directory); the results.md
of each stage and coarse's results.csv have golden files of their own; and each command's --help.

Only what varies from run to run is normalized, by the few substitutions in `normalized`:
timestamps, the progress bars' clocks (elapsed and eta), the time_s column of the tables (seconds
a trial took), the numbers of --dry-run's `estimated time:` line, and the temporary directory
(<TMP>). Everything else must match exactly. Torch runs on one thread and --workers 1 is given, so
the numbers do not depend on the machine's core count.

To re-record after a change that is meant to be seen:
    HPSEARCH_RECORD_GOLDEN=1 pytest tests/test_outputs_unchanged.py
writes the golden files instead of comparing (each case is then reported as skipped); read
`git diff tests/golden` before committing them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import ROOT, cli

GOLDEN = ROOT / "tests/golden"
RECORD = os.environ.get("HPSEARCH_RECORD_GOLDEN") == "1"

SPEC = "configs/smoke.yaml"
RUN = "run"
ONE_PROCESS = ("--workers", "1")  # the default is one worker per 8 cores: a larger machine would print 2

# Case name -> arguments, in the order they run (each stage reads the one before it).
COMMANDS: dict[str, tuple[str, ...]] = {
    "sanity-check": ("sanity-check", SPEC),
    "coarse-dry-run": ("coarse", SPEC, "--out", RUN, "--dry-run", *ONE_PROCESS),
    "coarse": ("coarse", SPEC, "--out", RUN, *ONE_PROCESS),
    "refine-dry-run": ("refine", RUN, "--dry-run", *ONE_PROCESS),
    "refine": ("refine", RUN, *ONE_PROCESS),
    "report": ("report", RUN),
    "final": ("final", RUN, "--top", "2", "--seeds", "2", *ONE_PROCESS),  # 4 runs, not 3 seeds of every tied trial
}
HELP: dict[str, tuple[str, ...]] = {
    "help": ("--help",),
    **{f"help-{name}": (name, "--help") for name in ("sanity-check", "coarse", "refine", "report", "final")},
}
# Golden file name -> the file the pipeline wrote, relative to its directory.
RESULTS = {
    "coarse-results.md": f"{RUN}/coarse/results.md",
    "coarse-results.csv": f"{RUN}/coarse/results.csv",
    "refine-results.md": f"{RUN}/refine-1/results.md",
    "report-results.md": f"{RUN}/report/results.md",
    "final-results.md": f"{RUN}/final/results.md",
}

STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
# A progress bar's elapsed time or eta, 0:00:02, or -:--:-- (eta not known yet).
CLOCK = re.compile(r"(?<![\d:])(?:\d+|-):(?:\d\d|--):(?:\d\d|--)(?![\d:])")
ESTIMATE_LINE = re.compile(r"^estimated time: .*$", re.MULTILINE)
DURATION = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)? (?:s|min|h)\b")  # 0.2 s, 4.48e-05 s, 3 min
NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")
TIME_COLUMN = "time_s"


def normalized(text: str, tmp: Path) -> str:
    """`text` with what varies between runs of the same command replaced by placeholders."""
    for path in {str(tmp.resolve()), str(tmp)}:
        text = text.replace(path, "<TMP>")
    text = STAMP.sub("<TIMESTAMP>", text)
    text = CLOCK.sub("H:MM:SS", text)
    text = ESTIMATE_LINE.sub(lambda m: DURATION.sub("<T>", m.group(0)), text)
    return _blank_time_column(text)


def _blank_time_column(text: str) -> str:
    """Each number in the time_s column of a table (rich, Markdown or CSV) replaced by <t>: the
    column is found by its header, in a rich table by position, in the others by field index."""
    lines = text.split("\n")
    span: tuple[int, int] | None = None  # a rich table's column: characters [start, end)
    field: tuple[str, int] | None = None  # a Markdown or CSV table's column: separator and index
    for i, line in enumerate(lines):
        if line.startswith("┃") and f" {TIME_COLUMN} " in line:
            at = line.index(f" {TIME_COLUMN} ")
            span = (line.rindex("┃", 0, at) + 1, line.index("┃", at))
        elif span is not None and line.startswith("│") and NUMBER.fullmatch(line[span[0] : span[1]]):
            width = span[1] - span[0]
            lines[i] = line[: span[0]] + "<t> ".rjust(width) + line[span[1] :]
        elif line.startswith("└"):
            span = None
        if line.strip() == "":  # a Markdown table ends at a blank line
            field = None
        for sep in ("|", ","):
            cells = line.split(sep)
            if [c.strip() for c in cells].count(TIME_COLUMN) == 1:
                field = (sep, [c.strip() for c in cells].index(TIME_COLUMN))
            elif field is not None and field[0] == sep and len(cells) > field[1] and NUMBER.fullmatch(cells[field[1]]):
                cells[field[1]] = " <t> " if sep == "|" else "<t>"
                lines[i] = sep.join(cells)
    return "\n".join(lines)


def transcript(
    command: tuple[str, ...], code: int, stdout: str, stderr: str, files: list[str] | None
) -> dict[str, str]:
    """A command's case as named sections, in the order the golden file holds them."""
    sections = {"command": "$ hpsearch " + " ".join(command) + "\n", "exit code": f"{code}\n"}
    sections |= {"stdout": stdout, "stderr": stderr}
    if files is not None:
        sections["files written"] = "".join(f"{name}\n" for name in files)
    return sections


NO_NEWLINE = "\\ no newline at end\n"  # as diff marks it: the text is kept exactly


def render(sections: dict[str, str]) -> str:
    """The golden file's text: each section under its `--- name` line, kept exactly."""
    return "".join(f"--- {name}\n{body}{_ending(body)}" for name, body in sections.items())


def _ending(body: str) -> str:
    return "" if body == "" or body.endswith("\n") else "\n" + NO_NEWLINE


def parse(text: str) -> dict[str, str]:
    """render's sections read back."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^--- (?=[a-z ]+\n)", text, flags=re.MULTILINE)[1:]:
        name, body = chunk.split("\n", 1)
        if body.endswith("\n" + NO_NEWLINE):
            body = body[: -len("\n" + NO_NEWLINE)]
        sections[name] = body
    return sections


def files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def read(path: Path) -> str:
    return path.read_bytes().decode()  # bytes: line endings are compared too (results.csv's are \r\n)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Golden name -> normalized text: every command case (rendered sections), then the results files."""
    tmp = tmp_path_factory.mktemp("outputs")
    (tmp / "configs").mkdir()
    shutil.copy(ROOT / SPEC, tmp / SPEC)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got: dict[str, str] = {}
        for name, args in COMMANDS.items():
            before = files(tmp)
            res = cli(*args, cwd=tmp)
            after = files(tmp)
            written = sorted(after - before) + [f"removed: {f}" for f in sorted(before - after)]
            sections = transcript(args, res.returncode, res.stdout, res.stderr, written)
            got[name] = render({k: normalized(v, tmp) for k, v in sections.items()})
        for name, args in HELP.items():
            res = cli(*args, cwd=tmp)
            got[name] = render(transcript(args, res.returncode, res.stdout, res.stderr, None))
        for name, relative in RESULTS.items():
            got[name] = normalized(read(tmp / relative), tmp)
        yield got
    finally:
        torch.set_num_threads(threads)


def golden(name: str, text: str) -> str:
    """The recorded text of `name`; under HPSEARCH_RECORD_GOLDEN=1, `text` is recorded instead."""
    path = GOLDEN / f"{name}.txt"
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(text.encode())
        pytest.skip(f"recorded {path.relative_to(ROOT)}")
    assert path.is_file(), f"no golden file {path.relative_to(ROOT)}: record it with HPSEARCH_RECORD_GOLDEN=1"
    return read(path)


@pytest.mark.parametrize("case", [*COMMANDS, *HELP])
def test_command_output_is_unchanged(outputs: dict[str, str], case: str) -> None:
    got = parse(outputs[case])
    want = parse(golden(case, outputs[case]))
    assert got.keys() == want.keys()
    for section in got:
        assert got[section] == want[section], f"{case}: {section} changed"


@pytest.mark.parametrize("name", list(RESULTS))
def test_results_file_is_unchanged(outputs: dict[str, str], name: str) -> None:
    assert outputs[name] == golden(name, outputs[name])


def test_the_normalization_keeps_what_does_not_vary(tmp_path: Path) -> None:
    """Timings, clocks and the temporary directory become placeholders; the numbers beside them stay."""
    text = (
        "search ━━ trial 8/8 0:00:01 eta -:--:-- best val_acc 0.842 (trial 5)\n"
        f"results: {tmp_path}/run/coarse/results.md\n"
        "estimated time: ~0.2 s of training (from 10 timed steps: 4.48e-05 s a step x 25 steps / 8 = 0.014 s, x 16)\n"
        "┃ rank ┃ val_acc ┃ time_s ┃\n"
        "│   =1 │   0.816 │   0.05 │\n"
        "└──────┴─────────┴────────┘\n"
        "| rank | val_acc | time_s |\n"
        "|---|---|---|\n"
        "| =1 | 0.816 | 0.05 |\n"
        "rank,val_acc,time_s,error\n"
        "1,0.816,0.052,\n"
    )
    assert normalized(text, tmp_path) == (
        "search ━━ trial 8/8 H:MM:SS eta H:MM:SS best val_acc 0.842 (trial 5)\n"
        "results: <TMP>/run/coarse/results.md\n"
        "estimated time: ~<T> of training (from 10 timed steps: <T> a step x 25 steps / 8 = <T>, x 16)\n"
        "┃ rank ┃ val_acc ┃ time_s ┃\n"
        "│   =1 │   0.816 │    <t> │\n"
        "└──────┴─────────┴────────┘\n"
        "| rank | val_acc | time_s |\n"
        "|---|---|---|\n"
        "| =1 | 0.816 | <t> |\n"
        "rank,val_acc,time_s,error\n"
        "1,0.816,<t>,\n"
    )
