#!/usr/bin/env python3
"""Population speed-up on the hard spec's network shapes: P trials of one shape trained together
against the same P trained one at a time, side by side in one run (what `tpe: {same_shape: true}`
buys a wave of P).

    python benchmarks/shape_populations.py --data-root DIR        # real CIFAR-10, the hard spec's data
    python benchmarks/shape_populations.py --synthetic            # CIFAR-shaped random data

Each shape trains P trials (lr 0.01, 0.02, ..., the hard spec's other settings) for one epoch on the
spec's training subset (20,000 images): first one at a time (run_trial), then as one population
(run_population), and the ratio of the two wall times is printed. Dropout 0.2 in both: since
populations draw each trial's own dropout masks, dropout no longer splits them.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from hpsearch.data import load_data
from hpsearch.runs.records import TrialConfig
from hpsearch.spec.load import load_spec
from hpsearch.spec.schema import ModelSpec
from hpsearch.training.populations.builtin import run_population
from hpsearch.training.trial import run_trial, warm_up

SHAPES = [((256,), 64, "relu"), ((512, 256), 32, "tanh"), ((64,), 256, "elu"), ((512,), 128, "leaky_relu")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, help="folder holding cifar-10-batches-bin (or -py)")
    p.add_argument("--synthetic", action="store_true", help="CIFAR-shaped random data")
    p.add_argument("--population", type=int, default=4, help="trials per population (default 4: a tpe wave)")
    args = p.parse_args()
    spec = load_spec(ROOT / "configs/cifar10_hard.yaml")
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": "cpu", "epochs": 1})})
    if args.synthetic:
        synthetic = {"dataset": "synthetic", "synthetic_train": 21000, "train_subset": None}
        spec = spec.model_copy(update={"data": spec.data.model_copy(update=synthetic)})
    data = load_data(spec, args.data_root, None)
    warm_up()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data.y_train)} training images, 1 epoch")
    print(f"{'hidden':<12} {'batch':>5} {'activation':<11} {'one at a time':>13} {'population':>10} {'speed-up':>8}")
    for hidden, batch, act in SHAPES:
        model = ModelSpec(hidden=hidden, activation=act, dropout=0.2)  # type: ignore[arg-type]
        train = spec.train.model_copy(update={"batch_size": batch})
        lrs = [0.01 * (i + 1) for i in range(args.population)]
        cs = [TrialConfig(i, {}, model, train.model_copy(update={"lr": lr}), 0) for i, lr in enumerate(lrs)]
        start = time.perf_counter()
        for c in cs:
            run_trial(c, data)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        run_population(cs, data)
        together = time.perf_counter() - start
        ratio = alone / together
        print(f"{str(list(hidden)):<12} {batch:>5} {act:<11} {alone:>12.2f}s {together:>9.2f}s {ratio:>7.2f}x")


if __name__ == "__main__":
    main()
