#!/usr/bin/env python3
"""Successive halving against random search at the same trial-epoch budget, side by side.

    python benchmarks/halving.py --data-root DIR                 # real CIFAR-10 under DIR
    python benchmarks/halving.py --data-root DIR --seeds 0 1 2 --json out.json
    python benchmarks/halving.py --synthetic --seeds 0           # seconds: CIFAR-shaped random data

The search is configs/cifar10_coarse.yaml (the lecture's two-layer net, lr and weight decay
log-uniform, 5 epochs). Random search: its 100 trials x 5 epochs = 500 trial-epochs. Halving:
`search.halving` with eta 6 and min_epochs 1 (rungs at 1 and 5 epochs): N trials train 1 epoch, the
best N/6 go on to 5, so N + 4 N/6 = 500 gives N = 300 configurations for the same 500 trial-epochs.
eta 3 (rungs 1, 3, 5) is also run, with the N that fits the same budget (264 configurations).

For each search seed and method it prints: configurations tried, trial-epochs trained, wall time,
the best validation accuracy at 5 epochs (1,000 validation examples: one accuracy is +-1.6 points),
and, to show the winner's curse of picking the best of more noisy numbers, the test accuracy of
the winner trained again (same seed, same init and batch order: the same network) and scored on
the 10,000 test images once. Methods run one after the other in one process, in the order
random, halving (eta 6), halving (eta 3), for each seed: the machine's load affects them alike.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpsearch.data import load_data
from hpsearch.data.cifar10 import load_cifar10, resolve_data_root
from hpsearch.runs.records import TrialState
from hpsearch.search.halving import planned_counts, rung_epochs, trial_epochs
from hpsearch.search.space import trial_configs
from hpsearch.spec.load import load_spec
from hpsearch.spec.options import StageOptions
from hpsearch.spec.schema import HalvingSpec, Spec
from hpsearch.stages.coarse import run_coarse
from hpsearch.training.trial import run_trial

BUDGET_TRIALS = 100  # random search's trials; the budget is these x train.epochs trial-epochs


def halving_trials(spec: Spec, halving: HalvingSpec, budget: int) -> int:
    """The most configurations whose planned halving stage fits in `budget` trial-epochs."""
    rungs = rung_epochs(spec.train.epochs, halving)
    n = 1
    while trial_epochs(planned_counts(n + 1, rungs, halving.eta), rungs) <= budget:
        n += 1
    return n


def methods(spec: Spec, etas: list[int]) -> list[tuple[str, Spec]]:
    budget = BUDGET_TRIALS * spec.train.epochs
    out = [("random", with_search(spec, trials=BUDGET_TRIALS, halving=None))]
    for eta in etas:
        h = HalvingSpec(eta=eta, min_epochs=1)
        out.append((f"halving eta {eta}", with_search(spec, trials=halving_trials(spec, h, budget), halving=h)))
    return out


def with_search(spec: Spec, **search: object) -> Spec:
    return spec.model_copy(update={"search": spec.search.model_copy(update=search)})


def run_method(spec: Spec, seed: int, data_root: Path | None, test_data: object) -> dict[str, object]:
    seeded = with_search(spec, seed=seed)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        outcome = run_coarse(seeded, "benchmark", StageOptions(out=Path(out), data_root=data_root))
        wall = time.perf_counter() - start
    trained = sum(r.epochs_done for r in outcome.ranked)
    best = outcome.best
    assert best is not None and best.state is TrialState.COMPLETE
    config = next(c for c in trial_configs(seeded) if c.trial_id == best.trial)
    again = run_trial(config, test_data)  # type: ignore[arg-type]  # its "validation" split is the test set
    return {
        "configurations": len(outcome.ranked),
        "trial_epochs": trained,
        "wall_s": round(wall, 1),
        "best_val_acc": best.val_acc,
        "best_trial": best.trial,
        "best_params": {k: float(v) for k, v in best.params.items()},
        "winner_test_acc": again.val_acc,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, help="folder holding cifar-10-batches-bin (or -py)")
    p.add_argument("--synthetic", action="store_true", help="CIFAR-shaped random data (a quick check of the script)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--etas", type=int, nargs="+", default=[6, 3], help="halving's eta values to run")
    p.add_argument("--json", type=Path, help="write every row here")
    args = p.parse_args()
    spec = load_spec(ROOT / "configs/cifar10_coarse.yaml").model_copy(deep=True)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": "cpu"})})
    if args.synthetic:
        synthetic = spec.data.model_copy(
            update={"dataset": "synthetic", "synthetic_train": 6000, "synthetic_test": 1000, "val_size": 1000}
        )
        spec = spec.model_copy(update={"data": synthetic})
    data = load_data(spec, args.data_root, None)
    if args.synthetic:
        test_x, test_y = data.x_val, data.y_val  # synthetic: no separate test split to score
    else:
        raw = load_cifar10(resolve_data_root(args.data_root, spec.data.root), download=False)
        test_x, test_y = raw.x_test, raw.y_test
    test_data = dataclasses.replace(data, x_val=test_x, y_val=test_y)
    rows = []
    for seed in args.seeds:
        for name, method_spec in methods(spec, args.etas):
            row = {"method": name, "seed": seed, **run_method(method_spec, seed, args.data_root, test_data)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def print_table(rows: list[dict[str, object]]) -> None:
    columns = f"{'configs':>7} {'trial-ep':>8} {'wall_s':>7} {'best val':>8} {'winner test':>11}"
    print(f"{'method':<16} {'seed':>4} {columns}")
    for r in rows:
        print(
            f"{r['method']:<16} {r['seed']:>4} {r['configurations']:>7} {r['trial_epochs']:>8} {r['wall_s']:>7} "
            f"{r['best_val_acc']:>8.3f} {r['winner_test_acc']:>11.4f}"
        )
    print()
    print(f"{'mean over seeds':<16} {'runs':>4} {columns}")
    for name in dict.fromkeys(str(r["method"]) for r in rows):
        mine = [r for r in rows if r["method"] == name]

        def mean(key: str, rs: list[dict[str, object]] = mine) -> float:
            return statistics.mean(float(r[key]) for r in rs)  # type: ignore[arg-type]

        print(
            f"{name:<16} {len(mine):>4} {mean('configurations'):>7.0f} {mean('trial_epochs'):>8.0f} "
            f"{mean('wall_s'):>7.1f} {mean('best_val_acc'):>8.3f} {mean('winner_test_acc'):>11.4f}"
        )


if __name__ == "__main__":
    main()
