#!/usr/bin/env python3
"""How a Ray worker should get CIFAR-10: load it from its own data root, or get it from the object store.

    python benchmarks/ray_data.py --data-root DIR

Starts a local Ray instance (2 CPUs) and times, inside Ray tasks: building the dataset from the
binary release on disk (what hpsearch does, once per worker process), and ray.get of the same
dataset put into the object store by the driver; plus the driver's ray.put.
"""

# ruff: noqa: E402  (imports of hpsearch follow the sys.path set-up below)
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray

from hpsearch.data import DataRecipe
from hpsearch.spec.edit import spec_to_yaml
from hpsearch.spec.load import load_spec


def from_disk(recipe: DataRecipe) -> float:
    t = time.perf_counter()
    recipe()
    return time.perf_counter() - t


def from_store(ref: list) -> float:  # type: ignore[type-arg]
    t = time.perf_counter()
    data = ray.get(ref[0])
    assert len(data.x_train) > 0
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    recipe = DataRecipe(spec_to_yaml(load_spec(ROOT / "configs/cifar10_coarse.yaml")), args.data_root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    disk = ray.remote(from_disk)
    store = ray.remote(from_store)
    ray.get(disk.remote(recipe))  # start a worker process and import torch there first
    data = recipe()
    t = time.perf_counter()
    ref = ray.put(data)
    put = time.perf_counter() - t
    disk_s = min(ray.get([disk.remote(recipe) for _ in range(3)]))
    store_s = min(ray.get([store.remote([ref]) for _ in range(3)]))
    mb = (data.x_train.numel() + data.x_val.numel()) / 1e6
    print(f"CIFAR-10 as hpsearch keeps it: {mb:.0f} MB of uint8 images")
    print(f"in a Ray task, from its own data root (read, split, statistics): {disk_s:.2f} s")
    print(f"in a Ray task, ray.get from the object store:                     {store_s:.2f} s")
    print(f"driver, ray.put into the object store:                            {put:.2f} s")
    print(
        f"a command's wait for data (workers load in parallel): data root {disk_s:.2f} s, "
        f"object store {put + store_s:.2f} s (put, then get)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
