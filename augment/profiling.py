"""Where the time goes: ratios measured in one run (DESIGN.md, Speed), so a busy or different machine
still gives comparable answers where a bare wall time would not."""

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from augment import trainer
from augment.checkpoint import BUNDLED, load_generator
from augment.pipeline import GenerateConfig, draw, generate
from classifier.checkpoint import REFERENCE
from classifier.train import TrainConfig, fit
from data import mnist
from data.errors import InputError
from data.files import resolve_device, use_all_cores

N_REAL = 2048  # real MNIST images the GAN and the classifier train on: enough for whole batches of either recipe
CLASSIFY_STEPS = 30
MAX_SECONDS = 600
MATMUL = 2048  # the peak is that of an fp32 MATMUL x MATMUL matmul


@dataclass(frozen=True)
class Profile:
    device: str
    threads: int
    train_images_per_s: float  # the default recipe (dcgan preset)
    tutorial_images_per_s: float  # the classic Keras DCGAN, its own recipe
    train_gflop_per_image: float  # one default training step's FLOPs (forward + backward of D and G) per image
    peak_gflop_per_s: float  # fp32 MATMUL^3 matmuls on all threads, on the device the GAN trains on
    generate_images_per_s: float  # the generate pipeline end to end, into an HDF5 file
    forward_images_per_s: float  # the generator's forward pass alone, same images and batch size
    classify_images_per_s: float

    @property
    def train_speedup(self) -> float:
        return self.train_images_per_s / self.tutorial_images_per_s

    @property
    def train_gflop_per_s(self) -> float:
        return self.train_gflop_per_image * self.train_images_per_s

    @property
    def peak_fraction(self) -> float:
        return self.train_gflop_per_s / self.peak_gflop_per_s

    @property
    def generate_overhead(self) -> float:
        """Pipeline time / forward time - 1, for the same images."""
        return self.forward_images_per_s / self.generate_images_per_s - 1

    def lines(self) -> list[str]:
        lines = [f"profile on {self.device}, {self.threads} threads "
                 f"(compare the ratios: the bare rates move with the machine and its load)"]
        return lines + [
            f"train: {self.train_images_per_s:,.0f} images/s (dcgan) vs {self.tutorial_images_per_s:,.0f} (tutorial): "
            f"{self.train_speedup:.2f}x",
            f"train step: {self.train_gflop_per_s:.1f} GFLOP/s ({self.train_gflop_per_image * 1e3:.2f} MFLOP/image) = "
            f"{self.peak_fraction:.1%} of the {self.peak_gflop_per_s:.1f} GFLOP/s fp32 {MATMUL}^3 matmul peak",
            f"generate: {self.generate_images_per_s:,.0f} images/s end to end vs {self.forward_images_per_s:,.0f} "
            f"generator forward alone: overhead {self.generate_overhead:.1%} (target <= 25%)",
            f"classify: {self.classify_images_per_s:,.0f} images/s training DigitCNN ({CLASSIFY_STEPS} steps)",
        ]


def profile(data_dir: Path | None = None, seconds: float = 5.0, device: str = "cpu") -> Profile:
    """About `seconds` each for the two GAN recipes, the matmul peak and the generator's forward pass; the
    pipeline then makes as many images as the forward pass drew, so it takes longer by its overhead."""
    if not 0 < seconds <= MAX_SECONDS:
        raise InputError(f"seconds must be in (0, {MAX_SECONDS}], got {seconds}")
    dev = resolve_device(device)
    threads = use_all_cores()
    train = mnist.load("train", folder=data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        dcgan, flops = _train_rate("dcgan", train, seconds, Path(tmp), dev)
        tutorial, _ = _train_rate("tutorial", train, seconds, Path(tmp), dev)
        generated, forward = _generate_rates(seconds, Path(tmp), dev)
    subset = train.subset(mnist.labelled_subset(train.labels, N_REAL, seed=0))
    _, history = fit(subset, TrainConfig(epochs=1, steps=CLASSIFY_STEPS), device=device, progress=False)
    return Profile(str(dev), threads, dcgan, tutorial, flops / 1e9, _matmul_peak(seconds, dev) / 1e9, generated, forward,
                   history[-1]["images_per_s"])


def _until(seconds: float, step, device: torch.device = torch.device("cpu")) -> float:
    """Calls of step() per second, over at least one call and about `seconds` (CUDA: its queued work done)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    calls, start = 0, time.perf_counter()
    while not calls or time.perf_counter() - start < seconds:
        step()
        sync()
        calls += 1
    return calls / (time.perf_counter() - start)


def _train_rate(arch: str, train: mnist.Digits, seconds: float, tmp: Path, dev: torch.device) -> tuple[float, float]:
    """Training images/s through the trainer's own step, and FLOPs per image, counted on the warm-up step
    (every step does the same work)."""
    config = trainer.make_config(arch, eval_every=0, n_real=N_REAL)
    run = trainer.start(tmp / arch, config, train, resume=False, device=str(dev.type))
    batches = itertools.cycle(run.epoch_order()[:run.steps_per_epoch * config.batch_size].view(-1, config.batch_size))
    with FlopCounterMode(display=False) as counter:
        run.train_step(next(batches))
    rate = _until(seconds, lambda: run.train_step(next(batches)), dev)
    run.release()
    return rate * config.batch_size, counter.get_total_flops() / config.batch_size


def _generate_rates(seconds: float, tmp: Path, dev: torch.device) -> tuple[float, float]:
    """Images/s of the generate pipeline end to end (every image kept, labelled by the reference
    classifier) and of the bundled generator's forward pass alone, on the same number of images."""
    g = load_generator(BUNDLED)[0].to(dev)
    batch = GenerateConfig().batch_size
    per_batch = 1 / _until(0, lambda: draw(g, batch, seed=0, batch_size=batch))  # also the warm-up
    n = batch * max(1, round(seconds / per_batch))
    start = time.perf_counter()
    draw(g, n, seed=0, batch_size=batch)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    config = GenerateConfig(n=n, min_confidence=0.0, batch_size=batch)
    generate(BUNDLED, REFERENCE, tmp / "profile.h5", config, progress=False, device=str(dev.type))
    return n / (time.perf_counter() - start), n / forward


def _matmul_peak(seconds: float, dev: torch.device) -> float:
    """FLOP/s of repeated fp32 matmuls, large enough to reach the BLAS peak on all threads."""
    a, b = torch.randn(MATMUL, MATMUL, device=dev), torch.randn(MATMUL, MATMUL, device=dev)
    torch.mm(a, b)  # warm-up
    return 2 * MATMUL**3 * _until(seconds, lambda: torch.mm(a, b), dev)
