"""The suite itself: no test waits on a fixed wall-clock deadline that load can break (a
30 s wait for a first record failed on a loaded 2-core machine, where the suite took 20 min).
A test waits for the event (helpers.wait_for), and a process for its end, up to helpers.PATIENCE.
One assert states one fact, so a failure says which fact failed; and a test says why in its own
words, not by an issue number a reader cannot look up."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

TESTS = ROOT / "tests"
CLOCKS = {"monotonic", "perf_counter", "time"}  # time.time_ns() seeds a test's randomness: no clock read
ISSUE = re.compile(r"(?<![a-z])issue[\s_]*#?\d+", re.IGNORECASE)  # in words and in names: test_issue_12


def deadlines(path: Path) -> list[str]:
    """Where the file waits on a number of seconds written in the test: `timeout=30`, `.wait(30)`,
    `.join(30)`, `.communicate(timeout=30)`; or reads a clock (a deadline, or a timed assertion)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if any(k.arg == "timeout" and _number(k.value) for k in node.keywords):
            found.append((node.lineno, f"{name}(timeout=<seconds>)"))
        elif name in ("wait", "join") and node.args and _number(node.args[0]):
            found.append((node.lineno, f"{name}(<seconds>)"))
        elif name in CLOCKS and isinstance(func, ast.Attribute) and _is_time_module(func.value):
            found.append((node.lineno, f"time.{name}()"))
    return [f"{path.name}:{line}: {what}" for line, what in sorted(found)]


def _number(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _is_time_module(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "time"


def test_no_test_waits_on_a_fixed_wall_clock_deadline() -> None:
    files = sorted(p for p in TESTS.rglob("*.py") if p.name != "helpers.py")  # helpers hold the one cap
    assert len(files) > 20
    assert [line for path in files for line in deadlines(path)] == []


def test_the_check_finds_each_kind_of_deadline(tmp_path: Path) -> None:
    path = tmp_path / "test_waits.py"
    path.write_text(
        "import time\n"
        "deadline = time.monotonic() + 30\n"
        "proc.communicate(timeout=120)\n"
        "proc.wait(60)\n"
        "p.join(10.0)\n"
        "proc.communicate(timeout=PATIENCE)\n"  # the cap: fine
        "seed = time.time_ns()\n"  # not a clock read for a deadline: fine
        "', '.join(names)\n"  # str.join: fine
    )
    assert deadlines(path) == [
        "test_waits.py:2: time.monotonic()",
        "test_waits.py:3: communicate(timeout=<seconds>)",
        "test_waits.py:4: wait(<seconds>)",
        "test_waits.py:5: join(<seconds>)",
    ]


def compound_asserts(path: Path) -> list[str]:
    """Where the file asserts several facts at once: `assert a and b`, or `assert all((a, b))` over
    a literal tuple or list."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Assert):
            continue
        test = node.test
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            found.append(f"{path.name}:{node.lineno}: and")
        elif _all_of_a_literal(test):
            found.append(f"{path.name}:{node.lineno}: all(<literal>)")
    return found


def _all_of_a_literal(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "all"
        and len(node.args) == 1
        and isinstance(node.args[0], (ast.Tuple, ast.List))
    )


def issue_citations(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [f"{path.name}:{n}: {m.group()}" for n, line in enumerate(lines, 1) for m in ISSUE.finditer(line)]


def test_each_assert_states_one_fact() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 20
    assert [where for path in files for where in compound_asserts(path)] == []


def test_the_check_finds_each_kind_of_compound_assert(tmp_path: Path) -> None:
    path = tmp_path / "test_facts.py"
    path.write_text(
        "assert a and b\n"
        "assert (\n    a\n    and b\n    and c\n), msg\n"
        "assert all((a, b))\n"
        "assert all([a, b])\n"
        "assert a or b\n"  # one fact with two ways to hold: fine
        "assert all(x > 0 for x in xs)\n"  # one fact over many values: fine
        "assert (a and b) == c\n"  # one comparison: fine
        "ok = a and b\n"  # not an assert: fine
    )
    assert compound_asserts(path) == [
        "test_facts.py:1: and",
        "test_facts.py:2: and",
        "test_facts.py:7: all(<literal>)",
        "test_facts.py:8: all(<literal>)",
    ]


def test_no_test_cites_an_issue_number() -> None:
    files = sorted(p for p in TESTS.rglob("*.py") if p.name != "test_suite.py")  # this file shows what it finds
    assert len(files) > 20
    assert [where for path in files for where in issue_citations(path)] == []


def test_the_check_finds_each_way_of_citing_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "test_cites.py"
    path.write_text(
        "# Issue 12 item 16: a comment\n"
        "# see issue #7\n"
        "def test_ISSUE3_is_fixed(): ...\n"
        "def test_issue_27_is_fixed(): ...\n"
        "# the issue's example, a tissue 5 cm wide, no number\n"  # fine
    )
    assert issue_citations(path) == [
        "test_cites.py:1: Issue 12",
        "test_cites.py:2: issue #7",
        "test_cites.py:3: ISSUE3",
        "test_cites.py:4: issue_27",
    ]
