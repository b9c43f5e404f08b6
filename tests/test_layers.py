"""The package's architecture, written once as a test: the packages in layers, each importing only
from its own layer's package or lower ones, and no import circle between modules. Every import
counts: at the top of a module, inside a function, and under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "hpsearch"

# Lowest first. A module may import from its own package and from the packages of lower layers.
LAYERS: list[tuple[str, ...]] = [
    ("hpsearch.errors", "hpsearch.version"),  # imported by everything, import nothing of ours
    ("hpsearch.spec",),  # the typed spec: schema, YAML loading and editing, options, lint
    ("hpsearch.data",),  # datasets into memory
    ("hpsearch.runs",),  # the run directory: records, the store, readers of what a stage wrote
    ("hpsearch.analysis",),  # what the records say: ranking, curve labels, range verdicts
    ("hpsearch.search",),  # what to train next: the space, TPE, halving, median stopping, refine's plan
    ("hpsearch.training",),  # one trial, populations of trials, networks, factories, checkpoints
    ("hpsearch.executors", "hpsearch.sanity"),  # where populations run; the lecture's checks
    ("hpsearch.output",),  # what a person reads: tables, reports, plots, CI files
    ("hpsearch.stages",),  # the drivers of sanity-check, coarse, refine and final
    ("hpsearch.cli",),  # the commands
    ("hpsearch", "hpsearch.__main__"),  # the public Python API
]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def home(module: str) -> str:
    """The package of LAYERS a module belongs to."""
    names = [name for layer in LAYERS for name in layer]
    return max((n for n in names if module == n or module.startswith(n + ".")), key=len)


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if home(module) in layer)


def imported(module: str) -> set[str]:
    """The hpsearch modules `module` imports, wherever in it the import is."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpsearch"):
            assert node.module is not None
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("hpsearch")}
    return {m for m in out if m != module}


def test_every_module_belongs_to_a_layer() -> None:
    names = {name for layer in LAYERS for name in layer}
    orphans = [m for m in MODULES if not any(m == n or m.startswith(n + ".") for n in names)]
    assert orphans == []


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{m} ({home(m)}) imports {t} ({home(t)})"
        for m in MODULES
        for t in sorted(imported(m))
        if layer_of(t) > layer_of(m) or (layer_of(t) == layer_of(m) and home(t) != home(m))
    ]
    assert upward == []


def test_no_import_circle() -> None:
    graph = {m: imported(m) for m in MODULES}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(path[path.index(t) :] + [t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert circles == []


def test_the_layer_test_sees_an_upward_import() -> None:
    """A known truth for the checker itself: the CLI imports the stages, so a stage importing the CLI
    would be upward."""
    assert layer_of("hpsearch.cli") > layer_of("hpsearch.stages.stage")
