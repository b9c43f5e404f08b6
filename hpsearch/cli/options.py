"""The arguments and options that more than one command takes, and how they become the library's
ExecOptions."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hpsearch.cli.exits import fail
from hpsearch.spec.options import ExecOptions, RayOptions


class Executor(str, enum.Enum):
    LOCAL = "local"
    RAY = "ray"


def nonempty_path(value: str) -> Path:
    """An empty --out or --data-root would silently mean the current directory."""
    if not value.strip():
        raise typer.BadParameter("an empty path; give a folder (. for this one)")
    return Path(value)


SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="YAML spec file.")]
# Options that coarse and refine (and sanity-check, for --data-root and --out; final, for the data and
# the execution) share.
DataRootOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-root", parser=nonempty_path, help="Where CIFAR-10 lives (beats $HPSEARCH_DATA_ROOT and data.root)."
    ),
]
OutOption = Annotated[
    Optional[Path], typer.Option("--out", parser=nonempty_path, help="Run directory (default runs/<name>).")
]
PopulationOption = Annotated[
    Optional[int],
    typer.Option(min=1, help="Trials trained together in one process (default: from memory; 1: one at a time)."),
]
WorkersOption = Annotated[
    Optional[int], typer.Option(min=1, help="Worker processes (default: 1 per 8 cores, at least 1).")
]
ExecutorOption = Annotated[
    Executor, typer.Option(help="local: this machine; ray: a Ray cluster (pip install 'hpsearch\\[ray]').")
]
RayAddressOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: the one on this machine, else a new one).",
    ),
]
FailUnderOption = Annotated[
    Optional[float],
    typer.Option(
        "--fail-under",
        min=0.0,
        max=1.0,
        metavar="ACC",
        help="CI gate: exit 4 when the best validation accuracy is below ACC (e.g. 0.35).",
    ),
]
FailOnEdgeOption = Annotated[
    bool,
    typer.Option(
        "--fail-on-edge",
        help="CI gate: exit 5 when a range verdict says the optimum lies outside a searched range "
        "(an edge, or nothing learned).",
    ),
]


def execution_options(
    population: int | None, workers: int | None, executor: Executor, ray_address: str | None
) -> ExecOptions:
    if ray_address is not None and executor is not Executor.RAY:
        raise fail("--ray-address needs --executor ray", code=2)
    ray = RayOptions(address=ray_address) if executor is Executor.RAY else None
    return ExecOptions(population=population, workers=workers, ray=ray)
