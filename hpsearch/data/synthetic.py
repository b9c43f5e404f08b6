"""Synthetic CIFAR-shaped data: random smooth class prototypes plus noise, for tests and quick runs without CIFAR-10.

`make_synthetic` is deterministic in its seed and returns the same `RawSplits` (uint8 (N, 3, 32, 32) images,
int64 labels) as the CIFAR-10 readers, so everything downstream treats both alike. This module imports
`hpsearch.data.cifar10` for `RawSplits` and the image shape, and no other module of the package.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from hpsearch.data.cifar10 import IMAGE_SHAPE, RawSplits

_COARSE = 4  # prototypes and structured noise live on a 4x4 grid, upsampled smoothly to 32x32
_CLASS_SPREAD = 20.0  # std of each class prototype around a shared base image, in pixel units
_SHAPE_NOISE = 50.0  # std of the low-frequency per-example noise, in pixel units
_PIXEL_NOISE = 20.0  # std of the independent per-pixel noise, in pixel units


def make_synthetic(n_train: int, n_test: int, seed: int = 0, num_classes: int = 10) -> RawSplits:
    """A CIFAR-shaped dataset a small model can learn: per-class smooth prototypes plus noise.

    Each class has a fixed random low-frequency prototype image (a shared base plus a class
    deviation); an example is its prototype plus low-frequency noise (which, unlike pixel noise,
    does not average away over pixels, so classes overlap and accuracy tops out near 80%) plus
    pixel noise, clipped to 0..255. Deterministic in `seed`.
    """
    if n_train < 1 or n_test < 0 or num_classes < 2:
        raise ValueError(f"need n_train >= 1, n_test >= 0, num_classes >= 2 (got {n_train}, {n_test}, {num_classes})")
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 195, size=(1, 3, _COARSE, _COARSE))
    prototypes = (base + rng.normal(0, _CLASS_SPREAD, size=(num_classes, 3, _COARSE, _COARSE))).astype(np.float32)
    x_train, y_train = _synthetic_split(rng, prototypes, n_train)
    x_test, y_test = _synthetic_split(rng, prototypes, n_test)
    return RawSplits(x_train, y_train, x_test, y_test, tuple(f"class_{i}" for i in range(num_classes)))


def _synthetic_split(rng: np.random.Generator, prototypes: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = len(prototypes)
    labels = rng.permutation(np.arange(n) % num_classes)  # balanced to within one example per class
    coarse = prototypes[labels] + rng.normal(0, _SHAPE_NOISE, size=(n, 3, _COARSE, _COARSE)).astype(np.float32)
    up = _upsample_matrix(_COARSE, IMAGE_SHAPE[1])
    images = up @ coarse @ up.T  # (n, 3, 32, 32): bilinear upsampling of both axes
    images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(_PIXEL_NOISE)
    pixels = np.clip(images, 0, 255, out=images).round(out=images).astype(np.uint8)
    return torch.from_numpy(pixels), torch.from_numpy(labels.astype(np.int64))


@functools.cache
def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear-interpolation weights, pixel centers aligned (like align_corners=False)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] += 1 - frac
    m[np.arange(dst), hi] += frac
    return m
