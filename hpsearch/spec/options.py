"""What a command asks of the library: how to execute trials, where a stage goes, how refine plans.

Plain frozen dataclasses the CLI fills from its options (hpsearch.api from its keyword arguments); no
torch, so building them costs nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray instance (or join $RAY_ADDRESS)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2


@dataclass(frozen=True)
class ExecOptions:
    population: int | None = None  # trials trained together; None: chosen from memory; 1: one at a time
    workers: int | None = None  # processes; None: one per THREADS_PER_WORKER cores
    ray: RayOptions | None = None  # run populations as Ray tasks instead (--executor ray)


@dataclass(frozen=True)
class StageOptions:
    out: Path | None = None  # the run directory; None: runs/<name> (or -2, -3, ... if taken)
    data_root: Path | None = None
    command: tuple[str, ...] = ()  # the command line (the CLI's sys.argv); (): none, recorded as null
    execution: ExecOptions = ExecOptions()
    resume: bool = False  # continue the run in `out` (same spec): finished trials are kept, the rest run


@dataclass(frozen=True)
class RefineOptions:
    top_k: int | None = None  # None: the spec's refine.top_k
    trials: int | None = None  # None: refine.trials, else as many as the previous stage
    epochs: int | None = None  # None: the previous stage's epochs x refine.epochs_factor
    data_root: Path | None = None
    command: tuple[str, ...] = ()  # as StageOptions.command
    execution: ExecOptions = ExecOptions()
    resume: bool = False  # finish an interrupted refine stage (same options); never starts a new one


class FitOn(str, enum.Enum):
    """What `hpsearch final` trains the finalists on."""

    TRAIN_VAL = "train+val"  # the training and validation examples: the most data, no validation accuracy
    TRAIN = "train"  # the training examples only: validation accuracy is measured, as in the search


@dataclass(frozen=True)
class FinalOptions:
    top: int | None = None  # None: the trials tied with the best (at most final.MAX_TIED)
    seeds: int | None = None  # runs per finalist; None: final.DEFAULT_SEEDS
    fit_on: FitOn | None = None  # None: train + validation
    epochs: int | None = None  # None: the stage's
    again: bool = False  # evaluate the test set although an earlier final did (another look at it)
    data_root: Path | None = None
    command: tuple[str, ...] = ()  # as StageOptions.command
    execution: ExecOptions = ExecOptions()
    resume: bool = False  # finish an interrupted final (same options); never starts a new one
