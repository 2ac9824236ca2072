"""generate -> label -> HDF5: draw digits, pseudo-label them, keep the confident ones, write the file."""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from augment.checkpoint import load_generator
from augment.selection import Selection
from classifier import checkpoint as classifier_checkpoint
from classifier.train import pseudo_label
from data import mnist
from data.errors import InputError, prepare_output
from data.files import autocast, check_seed, device_of, resolve_device, sha256_of
from data.pixels import to_uint8
from data.synthetic import MAX_ROWS, SyntheticWriter

MAX_DRAWS_PER_KEPT = 50  # bounded tries: give up after drawing this many images per image asked for


@dataclass(frozen=True)
class GenerateConfig:
    n: int = 10000
    min_confidence: float = 0.9
    min_realism: float = 0.0  # 0: no realism filter
    balance: bool = False
    seed: int = 0
    batch_size: int = 1000
    save_latents: bool = False
    digit: int | None = None  # conditional generators only: draw just this class

    def check(self) -> None:
        if not 1 <= self.n <= MAX_ROWS:
            raise InputError(f"n must be in 1..{MAX_ROWS:,} (what the reader accepts), got {self.n}")
        if not 0 <= self.min_confidence <= 1:
            raise InputError(f"min-confidence must be in 0..1, got {self.min_confidence}")
        if not 0 <= self.min_realism <= 100:
            raise InputError(f"min-realism must be in 0..100 (0 turns it off), got {self.min_realism}")
        if not 1 <= self.batch_size <= 100_000:
            raise InputError(f"batch size must be in 1..100,000, got {self.batch_size}")
        check_seed(self.seed)
        if self.digit is not None and not 0 <= self.digit <= 9:
            raise InputError(f"digit must be in 0..9, got {self.digit}")


@dataclass
class Report:
    drawn: int
    kept: int
    seconds: float
    class_counts: list[int]
    agreement: float | None  # conditional: how often the labeller agrees with the requested class
    failed: dict  # drawn images failing each test: confidence, realism, agreement with --agree


def targets(config: GenerateConfig) -> np.ndarray | None:
    """Per-class quotas when balancing (None otherwise): n split evenly, the remainder to the lowest digits."""
    if config.digit is not None:
        quota = np.zeros(10, np.int64)
        quota[config.digit] = config.n
        return quota
    if not config.balance:
        return None
    return np.array([config.n // 10 + (c < config.n % 10) for c in range(10)])


def generate(generator_path: Path, labeller_path: Path, out: Path, config: GenerateConfig,
             overwrite: bool = False, progress: bool = True, agree_path: Path | None = None,
             data_dir: Path | None = None, device: str = "cpu") -> Report:
    """agree_path: a second classifier that must give the same label; data_dir: MNIST, for --min-realism."""
    config.check()
    prepare_output(out, overwrite)
    dev = resolve_device(device)
    g, g_payload = load_generator(generator_path)
    g = g.to(dev)
    labeller = classifier_checkpoint.load(labeller_path)[0].to(dev)
    if config.digit is not None and not g.spec.conditional:
        raise InputError("--digit needs a conditional generator (train --conditional)")
    second = classifier_checkpoint.load(agree_path)[0] if agree_path else None
    if agree_path and sha256_of(agree_path) in (sha256_of(labeller_path),
                                                                      classifier_checkpoint.JUDGE_SHA256):
        raise InputError(f"{agree_path}: --agree needs a classifier independent of the labeller and of the judge "
                         f"(train one with classify --seed)")
    dataset = g_payload["info"]["run"]["dataset"]
    real = mnist.load("train", dataset, data_dir) if config.min_realism else None
    select = Selection(config.min_realism, second, real)
    spec = g.spec
    quota = targets(config)
    attrs = {
        "dataset": dataset,
        "generator_sha256": sha256_of(generator_path),
        "labeller_sha256": sha256_of(labeller_path),
        "seed": config.seed, "min_confidence": config.min_confidence, "balance": config.balance,
        "config": {**asdict(config), "generator": str(generator_path), "labeller": str(labeller_path), "spec": spec.as_dict(),
                   "agree": str(agree_path) if agree_path else None,
                   "agree_sha256": sha256_of(agree_path) if agree_path else None},
    }
    noise = torch.Generator().manual_seed(config.seed)
    counts, drawn, agree = np.zeros(10, np.int64), 0, 0
    max_drawn = MAX_DRAWS_PER_KEPT * config.n
    start = time.perf_counter()
    bar = tqdm(total=config.n, desc="generate", unit="img", disable=None if progress else True)
    with SyntheticWriter(out, attrs, nz=spec.nz if config.save_latents else None,
                         conditional=spec.conditional, overwrite=overwrite) as writer, torch.inference_mode():
        while counts.sum() < config.n:
            if drawn >= max_drawn:
                raise InputError(_shortfall(counts, quota, config, drawn))
            z = torch.randn(config.batch_size, spec.nz, generator=noise)  # on the CPU: the same on any device
            asked = _ask(quota, counts, config.batch_size, noise) if spec.conditional else None
            with autocast(dev):
                images = to_uint8(g(z.to(dev), None if asked is None else asked.to(dev)).float()).cpu()
            probs, confident = pseudo_label(labeller, images, config.min_confidence)
            confidence, labels = probs.max(1)
            drawn += len(z)
            keep = select(images, labels, confident)
            if quota is not None:
                keep &= _within_quota(labels, keep, quota - counts)
            else:
                keep &= torch.cumsum(keep, 0) <= config.n - counts.sum()
            if spec.conditional:
                agree += (labels == asked).sum().item()
            if keep.any():
                writer.append(images[keep], labels[keep].to(torch.uint8), confidence[keep], probs[keep].half(),
                              latents=z[keep], condition=asked[keep].to(torch.int16) if spec.conditional else None)
                counts += np.bincount(labels[keep].numpy(), minlength=10)
                bar.update(int(keep.sum()))
    bar.close()
    return Report(drawn, int(counts.sum()), time.perf_counter() - start, counts.tolist(),
                  agree / drawn if spec.conditional else None, select.failed)


def _ask(quota, counts, size: int, noise: torch.Generator) -> torch.Tensor:
    """Classes to request from a conditional generator: those still short of their quota, or all ten."""
    open_classes = torch.arange(10) if quota is None else torch.from_numpy(np.flatnonzero(counts < quota))
    return open_classes[torch.randint(len(open_classes), (size,), generator=noise)]


def _within_quota(labels: torch.Tensor, keep: torch.Tensor, room: np.ndarray) -> torch.Tensor:
    """Keep a confident sample only while its class still has room (in drawing order)."""
    onehot = torch.nn.functional.one_hot(labels, 10) * keep[:, None]
    rank = torch.cumsum(onehot, 0)[torch.arange(len(labels)), labels]  # 1-based rank within its class
    return rank <= torch.from_numpy(room)[labels]


def _shortfall(counts, quota, config: GenerateConfig, drawn: int) -> str:
    if quota is None:
        return (f"only {counts.sum():,} of {config.n:,} samples passed the filters after drawing {drawn:,}: "
                f"lower --min-confidence or --min-realism, or drop --agree")
    short = [f"{c} ({counts[c]:,}/{quota[c]:,})" for c in range(10) if counts[c] < quota[c]]
    return (f"classes too rare at confidence >= {config.min_confidence} after drawing {drawn:,}: "
            f"{', '.join(short)}; lower --min-confidence or --min-realism, drop --agree, or drop --balance")


@torch.inference_mode()
def draw(g, n: int, seed: int, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n uint8 images from a generator, seeded; a conditional one is asked for classes 0-9 in turn
    (returned too), an unconditional one returns None for them."""
    noise, dev = torch.Generator().manual_seed(seed), device_of(g)
    images, asked = [], torch.arange(n) % 10 if g.spec.conditional else None
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), g.spec.nz, generator=noise)  # on the CPU: the same on any device
        y = None if asked is None else asked[i:i + len(z)].to(dev)
        with autocast(dev):
            images.append(to_uint8(g(z.to(dev), y).float()).cpu())
    return torch.cat(images), asked
