"""hpsearch: the cs231n hyperparameter-search recipe, as a command-line tool and a Python API.

    import hpsearch
    spec = hpsearch.load_spec("configs/smoke.yaml")            # or a hpsearch.Spec built in code
    stage = hpsearch.coarse(spec, out="runs/demo", trials=20)   # StageResult: .best .ranked .verdicts .dir
    stage = hpsearch.refine("runs/demo")                        # the StageResult of refine-1
    checks = hpsearch.sanity_check(spec)                        # SanityResult: .passed .checks
    fin = hpsearch.final("runs/demo")                           # FinalResult: .best .ledger
    run = hpsearch.open_run("runs/demo")                        # Run, read only: .stages .ranked(stage)
    model, preprocess = hpsearch.load_model("runs/demo")

The functions are hpsearch.api's (how they record a run, report progress and fail is said there),
the results hpsearch.results'. Each name is imported when first used: `import hpsearch` loads no
torch, matplotlib, Ray or pydantic, so the CLI's --help stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpsearch.errors import (
    DataError,
    HpsearchError,
    NothingToResume,
    NothingToTrain,
    OptionError,
    SpecError,
    StageStopped,
    StoreError,
)
from hpsearch.version import __version__ as __version__

if TYPE_CHECKING:
    from hpsearch.api import coarse, final, load_model, load_spec, open_run, refine, sanity_check
    from hpsearch.results import FinalResult, LedgerEntry, Run, SanityResult, StageResult
    from hpsearch.runs.records import TrialResult, TrialState
    from hpsearch.spec.schema import Spec

_LAZY = {
    **dict.fromkeys(
        ("coarse", "final", "load_model", "load_spec", "open_run", "refine", "sanity_check"), "hpsearch.api"
    ),
    **dict.fromkeys(("FinalResult", "LedgerEntry", "Run", "SanityResult", "StageResult"), "hpsearch.results"),
    **dict.fromkeys(("TrialResult", "TrialState"), "hpsearch.runs.records"),
    "Spec": "hpsearch.spec.schema",
}

__all__ = [
    "DataError",
    "FinalResult",
    "HpsearchError",
    "LedgerEntry",
    "NothingToResume",
    "NothingToTrain",
    "OptionError",
    "Run",
    "SanityResult",
    "Spec",
    "SpecError",
    "StageResult",
    "StageStopped",
    "StoreError",
    "TrialResult",
    "TrialState",
    "__version__",
    "coarse",
    "final",
    "load_model",
    "load_spec",
    "open_run",
    "refine",
    "sanity_check",
]


def __getattr__(name: str) -> Any:
    """A public name, imported on first use (PEP 562) and kept."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
