"""Training sets: a labelled real subset, plus extra images at an extra:real ratio. The one mixing rule,
used by classify and by every benchmark row: extras are taken in seeded random order, skipping those the
labeller is not sure of."""

from dataclasses import dataclass
from pathlib import Path

import torch

from classifier.model import DigitCNN
from classifier.train import TrainConfig, fit, pseudo_label
from data import mnist
from data.errors import InputError
from data.mnist import Digits
from data.synthetic import load_synthetic

CHUNK = 4096  # extras are labelled a chunk at a time, only as far as needed: pools run to 100,000s


def mix(real: Digits, images: torch.Tensor, ratio: float | None, seed: int, labels: torch.Tensor | None = None,
        labeller: DigitCNN | None = None, min_confidence: float = 0.0, source: str = "synthetic") -> Digits:
    """real plus round(ratio * len(real)) of `images` (ratio None: all that pass), in seeded random order, with
    their own `labels`; or, given a labeller, its labels where it is at least min_confidence sure; or, given both,
    their labels where the labeller agrees with them that sure. The others are skipped."""
    want = len(images) if ratio is None else round(ratio * len(real))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    picks, picked_labels, found = [], [], 0
    for start in range(0, len(order), max(CHUNK, want)):
        if found >= want:
            break
        idx = order[start:start + max(CHUNK, want)]
        if labeller is None:
            keep, label = torch.ones(len(idx), dtype=torch.bool), labels[idx]
        else:
            probs, keep = pseudo_label(labeller, images[idx], min_confidence)
            label = probs.argmax(1)
            if labels is not None:
                keep &= label == labels[idx]
        picks.append(idx[keep])
        picked_labels.append(label[keep])
        found += int(keep.sum())
    if found < want and ratio is not None:
        sure = ("" if labeller is None else f" reach confidence {min_confidence} under the labeller"
                + (" and agree with their class" if labels is not None else ""))
        raise InputError(f"{source}: only {found:,} images{sure}; ratio {ratio:g} x {len(real):,} real needs {want:,}: "
                         f"use a larger pool" + (" or a lower --min-confidence" if labeller is not None else ""))
    if not want:
        return real
    pick, label = torch.cat(picks)[:want], torch.cat(picked_labels)[:want]
    return Digits(torch.cat([real.images, images[pick]]), torch.cat([real.labels, label.to(real.labels.dtype)]))


def self_train(model: DigitCNN, real: Digits, unlabelled: torch.Tensor, rounds: int, config: TrainConfig,
               min_confidence: float, ratio: float | None = None, val: Digits | None = None, device: str = "cpu",
               source: str = "unlabelled real", on_round=lambda row: None) -> tuple[DigitCNN, list[dict]]:
    """Self-training, the standard semi-supervised reference point: each round, the last model labels the
    unlabelled images and a new one learns from the labelled subset plus those it labels at min_confidence
    (ratio x the subset's size of them, or all: None). Returns the last model and, per round, how many unlabelled
    images it learnt from and its last history row (each also given to on_round as it ends)."""
    log = []
    for r in range(1, rounds + 1):
        data = mix(real, unlabelled, ratio, config.seed, labeller=model, min_confidence=min_confidence, source=source)
        model, history = fit(data, config, val, device=device, progress=False)
        log.append({"round": r, "n_unlabelled": len(data) - len(real), **history[-1]})
        on_round(log[-1])
    return model, log


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
    synthetic ones, with the file's labels. Validation never overlaps either."""
    if synthetic is None and ratio is not None:
        raise InputError("--ratio needs --synthetic FILE")
    ratio = 1.0 if synthetic is not None and ratio is None else (ratio or 0.0)
    if not 0 <= ratio <= 100:
        raise InputError(f"ratio must be in 0..100 (synthetic images per real image), got {ratio}")
    pool, val_idx = mnist.validation_split(real.labels, val_size)
    if n_real == len(real) and len(val_idx):
        raise InputError(f"--n-real {n_real:,} is every label, validation too: pass --val-size 0")
    chosen = mnist.labelled_subset(real.labels, len(pool) if n_real is None else n_real, seed, val_size)
    train = real.subset(chosen)
    if ratio:
        data = load_synthetic(synthetic)
        train = mix(train, data.images, ratio, seed, labels=data.labels, source=str(synthetic))
    val = real.subset(val_idx) if len(val_idx) else None
    return Mix(train, val, len(chosen), len(train) - len(chosen), ratio)
