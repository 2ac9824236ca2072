"""Training sets: a labelled real subset, plus synthetic digits at a synthetic:real ratio."""

from dataclasses import dataclass
from pathlib import Path

import torch

from data import mnist
from data.errors import InputError
from data.mnist import Digits
from data.synthetic import load_synthetic


@dataclass(frozen=True)
class Mix:
    train: Digits
    val: Digits | None
    n_real: int
    n_synthetic: int
    ratio: float


def build(real: Digits, n_real: int | None, seed: int, synthetic: str | Path | None = None,
          ratio: float | None = None, val_size: int = mnist.VAL_SIZE) -> Mix:
    """n_real class-balanced real images (None: the whole training pool) plus round(ratio * n_real)
    synthetic ones drawn at random (seeded) from the HDF5 file. Validation never overlaps either."""
    if synthetic is None and ratio is not None:
        raise InputError("--ratio needs --synthetic FILE")
    ratio = 1.0 if synthetic is not None and ratio is None else (ratio or 0.0)
    if not 0 <= ratio <= 100:
        raise InputError(f"ratio must be in 0..100 (synthetic images per real image), got {ratio}")
    pool, val_idx = mnist.validation_split(real.labels, val_size)
    chosen = mnist.balanced_subset(real.labels, pool, len(pool) if n_real is None else n_real, seed)
    train = real.subset(chosen)
    n_synthetic = round(ratio * len(train))
    if n_synthetic:
        data = load_synthetic(synthetic)
        if len(data) < n_synthetic:
            raise InputError(f"{synthetic}: holds {len(data)} images, ratio {ratio} x {len(train)} real needs {n_synthetic}")
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_synthetic]
        train = Digits(torch.cat([train.images, data.images[pick]]), torch.cat([train.labels, data.labels[pick]]))
    val = real.subset(val_idx) if len(val_idx) else None
    return Mix(train, val, len(chosen), n_synthetic, ratio)
