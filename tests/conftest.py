"""Data fixtures shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

# The shared script that rebuilds CIFAR-10's binary release from the JPEGs beside it (no network).
MAKE_CIFAR10 = ROOT.parent / "shared/datasets/make_cifar10_bin.py"


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """A data root holding the real CIFAR-10 binary release, built once into a cache (~15 s)."""
    if not MAKE_CIFAR10.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must test on real CIFAR-10, but {MAKE_CIFAR10} does not exist")
        pytest.skip(f"real CIFAR-10 unavailable: {MAKE_CIFAR10} does not exist")
    root = Path(os.environ.get("HPSEARCH_TEST_CACHE", Path.home() / ".cache/hpsearch-test")) / "cifar10"
    root.mkdir(parents=True, exist_ok=True)
    # Idempotent: a complete cifar-10-batches-bin/ is left alone, so later sessions take no time here.
    subprocess.run([sys.executable, str(MAKE_CIFAR10), str(root)], check=True, stdout=subprocess.DEVNULL)
    return root
