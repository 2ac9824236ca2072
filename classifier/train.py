"""Training and evaluation of DigitCNN: seeded, reproducible, uint8 data batched without Python per-sample work."""

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from classifier.affine import random_affine
from classifier.model import DigitCNN
from data.errors import Diverged, InputError
from data.files import autocast, check_seed, device_of, resolve_device
from data.mnist import Digits
from data.pixels import to_model

AUGMENTATIONS = ("none", "classical")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. An epoch is one pass over the training set, but at least min_steps / epochs
    steps, so tiny labelled sets still get a fixed minimum budget of updates. `steps`, when given,
    fixes the number of updates whatever the set size (the benchmark's equal-compute budget)."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    min_steps: int = 600
    augment: str = "none"
    seed: int = 0
    steps: int | None = None

    def total_steps(self, n: int) -> int:
        """Optimiser steps for a training set of n images."""
        if self.steps is not None:
            return self.steps
        per_epoch = max(math.ceil(n / min(self.batch_size, n)), math.ceil(self.min_steps / self.epochs))
        return per_epoch * self.epochs

    def check(self) -> None:
        if not 1 <= self.epochs <= 100_000:
            raise InputError(f"epochs must be in 1..100,000, got {self.epochs}")
        if not 2 <= self.batch_size <= 60_000:
            raise InputError(f"batch size must be in 2..60,000, got {self.batch_size}")
        if not 0 < self.lr <= 1:
            raise InputError(f"learning rate must be in (0, 1], got {self.lr}")
        if not 0 <= self.min_steps <= 10**7 or (self.steps is not None and not 1 <= self.steps <= 10**7):
            raise InputError("min-steps must be in 0..10^7 and steps in 1..10^7")
        check_seed(self.seed)
        if self.augment not in AUGMENTATIONS:
            raise InputError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")


def _batches(n: int, size: int, generator: torch.Generator):
    """Endless full batches of indices drawn from successive random permutations of range(n)."""
    stream = torch.empty(0, dtype=torch.long)
    while True:
        while len(stream) < size:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        yield stream[:size]
        stream = stream[size:]


def fit(train: Digits, config: TrainConfig, val: Digits | None = None, device: str = "cpu",
        progress: bool = True) -> tuple[DigitCNN, list[dict]]:
    """Train a fresh DigitCNN with Adam and a one-cycle schedule; returns it (eval mode) and per-epoch history."""
    config.check()
    if len(train) < 2:
        raise InputError(f"need at least 2 training images, got {len(train)}")
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = DigitCNN().to(dev, memory_format=torch.channels_last)
    batch = min(config.batch_size, len(train))
    steps = config.total_steps(len(train))
    per_epoch = math.ceil(steps / config.epochs)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps)
    batches = _batches(len(train), batch, generator)
    history, start, loss_sum = [], time.perf_counter(), torch.zeros(())
    bar = tqdm(total=steps, desc="classifier", unit="step", disable=None if progress else True, leave=False)
    for step in range(1, steps + 1):
        model.train()
        idx = next(batches)
        x = to_model(train.images[idx])
        if config.augment == "classical":
            x = random_affine(x, generator)
        x = x.to(dev, memory_format=torch.channels_last)
        with autocast(dev):
            loss = F.cross_entropy(model(x), train.labels[idx].to(dev))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_sum += loss.detach().cpu()
        bar.update()
        if step % per_epoch == 0 or step == steps:
            seconds = time.perf_counter() - start
            since = step - (history[-1]["step"] if history else 0)
            row = {"epoch": math.ceil(step / per_epoch), "step": step, "loss": loss_sum.item() / since,
                   "seconds": seconds, "images_per_s": step * batch / seconds}
            if val is not None:
                row["val_accuracy"] = evaluate(model, val)
            if not math.isfinite(row["loss"]):
                raise Diverged(f"training diverged at step {step} (loss {row['loss']}, peak learning rate {config.lr:g})")
            history.append(row)
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("loss", "val_accuracy") if k in row})
            loss_sum.zero_()
    bar.close()
    return model.eval(), history


@torch.inference_mode()
def batched(fn, images: torch.Tensor, device: torch.device = torch.device("cpu"), batch: int = 2000) -> torch.Tensor:
    """The one batched-inference loop: fn on model inputs made from uint8 images (N, 28, 28) a batch at a
    time on `device`, so memory stays uint8; outputs float32, concatenated on the CPU."""
    out = []
    for i in range(0, len(images), batch):
        with autocast(device):
            out.append(fn(to_model(images[i:i + batch]).to(device, memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def predict_proba(model: DigitCNN, images: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, 10) float32 for uint8 images (N, 28, 28), on the model's device."""
    return batched(lambda x: model.eval()(x).softmax(1), images, device_of(model)).reshape(-1, 10)


def pseudo_label(model: DigitCNN, images: torch.Tensor, min_confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The one pseudo-labelling rule: softmax probabilities (N, 10), and the mask of the images whose top
    probability reaches min_confidence (their labels are the argmax)."""
    probs = predict_proba(model, images)
    return probs, probs.max(1).values >= min_confidence


def evaluate(model: DigitCNN, digits: Digits) -> float:
    """Top-1 accuracy on a labelled set."""
    return (predict_proba(model, digits.images).argmax(1) == digits.labels).float().mean().item()
