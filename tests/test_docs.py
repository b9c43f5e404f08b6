"""The docs are a product, and tested: the MkDocs site builds with no warning, every command and every
option has its place in the guides, every spec key (with its default) is in the spec reference, and
the example commands of the README and the pages that run on configs/smoke.yaml run.

Which examples run: the `hpsearch ...` lines of the ```bash and ```console blocks (a console block's
`$ hpsearch` lines), file by file, in order, in a fresh folder, in this process (helpers.cli). A line
runs when it names configs/smoke.yaml, or a run or spec that an earlier running line of the same
file wrote (`runs/smoke`, an `--out`, a `--write-spec`). Skipped, and said so by `skip_reason`:
- a CIFAR-10 spec (configs/cifar10_coarse.yaml, configs/cifar10_hard.yaml,
  examples/cifar10_convnet.yaml): a 170 MB download and minutes of training per command;
- `--executor ray`: a Ray cluster (the Ray tests start one on loopback; the docs' use a HEAD_IP);
- what a skipped line writes (its run directory, its --write-spec file) and every line using it.
Any other example line fails test_every_example_command_runs_or_is_skipped_for_a_stated_reason, so a
new example is runnable or says why not. To keep the runs fast (seconds, not minutes), the folder's
configs/smoke.yaml is the real smoke spec on a smaller synthetic set with shorter sanity checks: the
same keys, the same command lines, smaller numbers.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from helpers import PATIENCE, ROOT, cli
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hpsearch.cli import app
from hpsearch.spec.schema import Spec

DOCS = ROOT / "docs"
README = ROOT / "README.md"
SPEC_PAGE = DOCS / "spec.md"
SMOKE = "configs/smoke.yaml"
CIFAR10_SPECS = ("configs/cifar10_coarse.yaml", "configs/cifar10_hard.yaml", "examples/cifar10_convnet.yaml")
# The click group typer builds (typer carries its own copy of click: its classes, not click's).
GROUP: Any = typer.main.get_command(app)
COMMANDS: dict[str, Any] = dict(GROUP.commands)


# --- the site ---------------------------------------------------------------------------------------


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must build the docs, but mkdocs is not installed (it is in the dev extra)")
        pytest.skip("mkdocs is not installed: `pip install -e '.[dev]'` brings it (mkdocs-material)")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr  # --strict: a broken link or anchor, a page left out of the nav
    assert (site / "index.html").is_file()


# --- commands and options ---------------------------------------------------------------------------


def long_options(command: Any) -> list[str]:
    return [o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")]


def mentions(text: str, option: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def test_the_cli_has_the_five_commands() -> None:
    assert sorted(COMMANDS) == ["coarse", "final", "refine", "report", "sanity-check"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_guide_page(name: str) -> None:
    assert (DOCS / f"{name}.md").is_file()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_its_guide(name: str) -> None:
    guide = (DOCS / f"{name}.md").read_text()
    assert [o for o in long_options(COMMANDS[name]) if not mentions(guide, o)] == []


def test_the_top_level_options_are_in_the_docs() -> None:
    pages = "".join(p.read_text() for p in DOCS.glob("*.md"))
    assert [o for o in long_options(GROUP) if not mentions(pages, o)] == []


def test_the_option_check_finds_a_missing_option() -> None:
    assert not mentions("`--dry-run` and `--resume`", "--dry")
    assert mentions("`--dry-run` and `--resume`", "--dry-run")


# --- spec keys ----------------------------------------------------------------------------------------


def submodels(annotation: Any) -> tuple[list[type[BaseModel]], list[type[BaseModel]]]:
    """The spec models an annotation holds: directly (a section, `X | None`), and as the values of a
    mapping (search.space's ranges and value lists, keyed by the parameter's name)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], []
    if typing.get_origin(annotation) is dict:
        return [], [m for arg in typing.get_args(annotation)[1:] for m in submodels(arg)[0]]
    direct: list[type[BaseModel]] = []
    mapped: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):  # Union, Optional, Annotated (its metadata is no type)
        d, m = submodels(arg)
        direct += d
        mapped += m
    return direct, mapped


def spec_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every key of the spec as a dotted path (`search.halving.min_epochs`; a search.space entry as
    `search.space.<name>.low`), with its pydantic field."""
    keys: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        key = prefix + name
        keys[key] = field
        direct, mapped = submodels(field.annotation)
        for sub in direct:
            keys |= spec_fields(sub, key + ".")
        for sub in mapped:
            keys |= spec_fields(sub, key + ".<name>.")
    return keys


SPEC_KEYS = spec_fields(Spec)


def shown_default(field: FieldInfo) -> str:
    """A default as the spec reference writes it: YAML spelling in backticks."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(map(str, value)) + "]`"
    return f"`{value}`"


def reference_rows() -> dict[str, str]:
    """The spec reference's table rows: key -> its default column."""
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", SPEC_PAGE.read_text(), flags=re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def test_the_key_walk_reaches_nested_sections() -> None:
    assert "search.halving.min_epochs" in SPEC_KEYS
    assert "search.space.<name>.low" in SPEC_KEYS
    assert "search.space.<name>.values" in SPEC_KEYS


def test_every_spec_key_is_in_the_spec_reference() -> None:
    rows = reference_rows()
    assert [key for key in SPEC_KEYS if key not in rows] == []


def test_the_spec_reference_names_no_key_the_spec_lacks() -> None:
    assert [key for key in reference_rows() if key not in SPEC_KEYS] == []


def test_the_spec_reference_gives_each_key_its_default() -> None:
    rows = reference_rows()
    wrong = {k: (rows[k], shown_default(f)) for k, f in SPEC_KEYS.items() if rows.get(k) != shown_default(f)}
    assert wrong == {}


# --- the README ---------------------------------------------------------------------------------------


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_links_to_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    relative = [link for link in links if "://" not in link]
    assert [link for link in relative if not (ROOT / link).exists()] == []


def ci_commands() -> list[str]:
    """The commands .ci/run says are the README's (the line after each `# The README's ...` comment)."""
    lines = (ROOT / ".ci/run").read_text().splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("# The README's")]


def test_ci_runs_the_readme_set_up_and_test_commands() -> None:
    assert ci_commands() == ['pip install -e ".[dev]"', "pytest"]


@pytest.mark.parametrize("command", ci_commands())
def test_the_readme_keeps_each_command_ci_runs(command: str) -> None:
    blocks = [line.strip() for block in fenced_blocks(README.read_text()) for line in block.body]
    assert command in blocks


# --- the examples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    body: list[str]


def fenced_blocks(text: str) -> list[Block]:
    """Top-level and indented fenced code blocks, with their info string."""
    blocks: list[Block] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and lang is None:
            lang, body = fence.group(1), []
        elif fence:
            blocks.append(Block(lang, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def example_commands(text: str) -> list[list[str]]:
    """The `hpsearch` command lines of a page's bash and console blocks, as argv (without `hpsearch`)."""
    commands = []
    for block in fenced_blocks(text):
        if block.lang in ("bash", "sh", "shell"):
            lines = _joined(block.body)
        elif block.lang == "console":
            lines = [line[2:] for line in block.body if line.startswith("$ ")]
        else:
            continue
        for line in lines:
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["hpsearch"]:
                commands.append(argv[1:])
    return commands


def _joined(lines: list[str]) -> list[str]:
    """Shell lines with backslash continuations joined."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1] + " " + line.strip()
        else:
            out.append(line)
    return out


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def default_run(spec: str) -> str | None:
    """runs/<name> of a spec in the repository (where a command without --out writes)."""
    path = ROOT / spec
    return f"runs/{yaml.safe_load(path.read_text())['name']}" if path.is_file() else None


def writes(argv: list[str]) -> set[str]:
    """What a command writes that a later example may use: its run directory and --write-spec file."""
    out = {option(argv, "--out"), option(argv, "--write-spec")}
    if argv[0] in ("sanity-check", "coarse") and len(argv) > 1 and "--dry-run" not in argv:
        out.add(option(argv, "--out") or default_run(argv[1]))
    return {p for p in out if p}


def skip_reason(argv: list[str], runnable: set[str], skipped: set[str]) -> str | None:
    """Why an example does not run here (None: it runs), given what earlier lines of its page wrote."""
    if any(a in CIFAR10_SPECS for a in argv):
        return "needs CIFAR-10 (a 170 MB download, minutes of training)"
    if option(argv, "--executor") == "ray":
        return "needs a Ray cluster"
    if any(a in skipped for a in argv):
        return "uses what a skipped example wrote"
    target = argv[1] if len(argv) > 1 else ""
    if target == SMOKE or target in runnable:
        return None
    return "unknown: neither the smoke spec nor what an earlier example wrote"


def plan(text: str) -> list[tuple[list[str], str | None]]:
    """A page's example commands in order, each with its skip reason (None: runs)."""
    runnable: set[str] = set()
    skipped: set[str] = set()
    planned = []
    for argv in example_commands(text):
        reason = skip_reason(argv, runnable, skipped)
        (skipped if reason else runnable).update(writes(argv))
        planned.append((argv, reason))
    return planned


PAGES = [README, *sorted(DOCS.glob("*.md"))]
PLANS = {p.relative_to(ROOT).as_posix(): plan(p.read_text()) for p in PAGES}
RUNNABLE = {page: [argv for argv, reason in steps if reason is None] for page, steps in PLANS.items()}


def test_the_example_parser_reads_console_and_bash_blocks() -> None:
    text = (
        "```console\n$ hpsearch coarse configs/smoke.yaml\ncoarse: 8 trials\n```\n\n"
        "```bash\nhpsearch report \\\n  runs/smoke  # the run\n```\n"
    )
    assert example_commands(text) == [["coarse", "configs/smoke.yaml"], ["report", "runs/smoke"]]


def test_a_command_on_a_skipped_run_is_skipped() -> None:
    text = "```bash\nhpsearch coarse configs/cifar10_coarse.yaml --out runs/big\nhpsearch report runs/big\n```\n"
    assert [reason for _, reason in plan(text)] == [
        "needs CIFAR-10 (a 170 MB download, minutes of training)",
        "uses what a skipped example wrote",
    ]


def test_every_example_command_runs_or_is_skipped_for_a_stated_reason() -> None:
    unknown = [
        f"{page}: hpsearch {shlex.join(argv)}"
        for page, steps in PLANS.items()
        for argv, reason in steps
        if reason is not None and reason.startswith("unknown")
    ]
    assert unknown == []


def test_the_readme_runs_each_of_the_five_commands_on_the_smoke_spec() -> None:
    assert sorted({argv[0] for argv in RUNNABLE["README.md"]}) == sorted(COMMANDS)


def small_smoke_spec() -> str:
    """configs/smoke.yaml on fewer, smaller examples and shorter sanity checks (seconds a command)."""
    spec = yaml.safe_load((ROOT / SMOKE).read_text())
    spec["data"] |= {"synthetic_train": 600, "synthetic_test": 100, "val_size": 100}
    spec["sanity"] = {"probe_iterations": 20, "initial_batches": 1, "activation_batch": 64}
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.parametrize("page", [page for page, steps in RUNNABLE.items() if steps])
def test_the_example_commands_run(page: str, tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / SMOKE).write_text(small_smoke_spec())
    for argv in RUNNABLE[page]:
        result = cli(*argv, cwd=tmp_path)
        assert result.returncode == 0, f"{page}: hpsearch {shlex.join(argv)}\n{result.stderr}"
