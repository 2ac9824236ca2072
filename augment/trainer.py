"""GAN training: watchable (grids, CSV, loss plot, GIF), interruptible and exactly resumable.

Exact resume: each epoch's shuffle is a pure function of (seed, epoch), the noise comes from a
generator whose state is saved, and a checkpoint records the step inside the epoch, so a run
stopped anywhere and resumed ends with the same weights as one that never stopped.

Under torchrun, each process trains on its slice of every global batch (W processes x --batch-size), the
gradients are averaged by DistributedDataParallel, and process 0 alone writes the folder.
"""

import copy
import csv
import math
import os
import signal
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from PIL import Image
from tqdm import tqdm

from augment.checkpoint import load_training, save_generator, save_training
from augment.clusters import kmeans
from augment.diffaug import diff_augment
from augment.images import save_gif, save_grid
from augment.models import Discriminator, GanSpec, Generator
from augment.plots import plot_fid, plot_losses
from augment.relabel import Labels
from augment.tracking import FidProbe
from classifier.checkpoint import JUDGE_SHA256, REFERENCE_SHA256
from classifier.checkpoint import load as load_classifier
from data import distributed, mnist
from data.errors import InputError, check_folder_of
from data.files import (autocast, check_finite, check_seed, derived_seed, indexed_seed, lock_folder, resolve_device,
                        sha256_of, write_atomic)
from data.mnist import Digits
from data.pixels import to_model, to_uint8

LOSSES = ("bce", "hinge")
EXPLODED = 1e4  # a loss this large means training has diverged
CSV_FIELDS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s")
METRIC_FIELDS = ("step", "epoch", "minutes", "fid", "floor", "class_gap")
LABEL_FIELDS = ("step", "epoch", "val_accuracy", "images", "replaced")  # labels.csv: the labeller after each relabelling
LOG_EVERY = 20  # steps per CSV row
GIF_FRAMES = 100  # at most, spread over the run, and the last grid
R1_EVERY = 16  # lazy R1 (Karras et al. 2020): the penalty every 16th D step, scaled by 16
# Training defaults per architecture: dcgan's rates are the recipe study's, the tutorial's those of the Keras original.
TRAIN_PRESETS = {
    "dcgan": {"batch_size": 128, "lr_g": 5e-4, "lr_d": 5e-4, "beta1": 0.5, "beta2": 0.999, "loss": "bce", "ema": 0.999,
              "r1": 0.0, "diffaug": False},
    "tutorial": {"batch_size": 256, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.9, "beta2": 0.999, "loss": "bce", "ema": 0.999,
                 "r1": 0.0, "diffaug": False},
}


@dataclass(frozen=True)
class GanConfig:
    spec: GanSpec = field(default_factory=GanSpec)
    epochs: int = 5
    batch_size: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"
    ema: float = 0.999
    r1: float = 0.0  # R1 gradient penalty weight gamma (Mescheder et al. 2018) on real images; 0: off
    diffaug: bool = False  # DiffAugment translation + cutout on everything D sees
    eval_every: float = 1.0  # epochs between FID measurements; 0: off
    seed: int = 0
    sample_every: int = 0
    dataset: str = "mnist"
    n_real: int | None = None  # a class-balanced labelled subset (classify's, for the same seed); None: all
    labeller: str | None = None  # with n_real: a classifier checkpoint that labels the rest of the training pool
    labeller_sha256: str | None = None  # recorded at the start; a resumed run refuses a changed labeller
    min_confidence: float = 0.9  # the labeller's labels are used where it is at least this sure
    relabel_every: int = 0  # with a labeller: epochs between relabellings by the classifier the GAN improves; 0: never

    def check(self) -> None:
        whole = [k for k in ("epochs", "batch_size", "sample_every", "relabel_every", "seed")
                 if type(getattr(self, k)) is not int]
        if whole:  # a damaged checkpoint's config, say: the ranges below would not compare
            raise InputError(f"{', '.join(whole)} must be whole numbers")
        problems = [
            (1 <= self.epochs <= 100_000, f"epochs must be in 1..100,000, got {self.epochs}"),
            (2 <= self.batch_size <= 60_000, f"batch size must be in 2..60,000, got {self.batch_size}"),
            (0 < self.lr_g <= 1 and 0 < self.lr_d <= 1, "learning rates must be in (0, 1]"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "Adam betas must be in [0, 1)"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1) (0 turns it off), got {self.ema}"),
            (0 <= self.sample_every <= 10**9, f"sample-every must be in 0..10^9, got {self.sample_every}"),
            (0 <= self.r1 <= 1e6, f"r1 must be in 0..10^6, got {self.r1}"),
            (0 <= self.eval_every <= 1000, f"eval-every must be in 0..1000 epochs (0 turns it off), got {self.eval_every}"),
            (not self.spec.deep or self.spec.arch == "dcgan", "deep is an option of the dcgan architecture only"),
            (not self.labeller or (self.spec.conditional and self.n_real is not None),
             "--labeller labels the images outside the --n-real subset for a --conditional GAN: give both"),
            (0 <= self.min_confidence <= 1, f"min-confidence must be in 0..1, got {self.min_confidence}"),
            (0 <= self.relabel_every <= 100_000, f"relabel-every must be in 0..100,000 epochs, got {self.relabel_every}"),
            (not self.relabel_every or self.labeller, "--relabel-every relabels what --labeller labelled: give both"),
            (not self.spec.mbstd or self.batch_size % 4 == 0, f"mbstd groups images in fours: batch size {self.batch_size} "
                                                               f"must be a multiple of 4"),
        ]
        for ok, message in problems:
            if not ok:
                raise InputError(message)
        check_seed(self.seed)

    def as_dict(self) -> dict:
        """Without relabel_every when off, so that the records of runs from before it still match."""
        d = {**asdict(self), "spec": self.spec.as_dict()}
        return d if self.relabel_every else {k: v for k, v in d.items() if k != "relabel_every"}

    @staticmethod
    def from_dict(d: dict) -> "GanConfig":
        return GanConfig(**{**d, "spec": GanSpec(**d["spec"])})


@dataclass
class Outcome:
    stopped: str  # "finished", "interrupted", "time budget" or "diverged"
    step: int
    epoch: int
    seconds: float
    images_per_s: float
    folder: Path
    config: GanConfig
    message: str = ""
    quality: dict | None = None  # from fid_summary, when FID was measured
    labels: dict | None = None  # from labels_summary, when relabelled
    signal: int = 0  # the signal that interrupted it (SIGINT or SIGTERM); the CLI exits 128 + it
    main: bool = True  # False in torchrun's other processes, which train but write and print nothing


def fid_summary(metrics_csv: Path) -> dict | None:
    """The best FID so far (and when), the floor, and the training minutes to first reach 10x the floor."""
    try:
        log = pd.read_csv(metrics_csv)[["step", "minutes", "fid", "floor"]].astype(float).dropna()
    except (OSError, ValueError, KeyError):  # absent, empty (a kill before the first row), damaged, or not ours
        return None
    if log.empty:
        return None
    best, floor = log.loc[log["fid"].idxmin()], log["floor"].iloc[-1]
    reached = log[log["fid"] <= 10 * floor]
    return {"best_fid": best["fid"], "best_step": int(best["step"]), "best_minutes": best["minutes"], "floor": floor,
            "minutes_to_10x": reached["minutes"].iloc[0] if len(reached) else None}


def labels_summary(labels_csv: Path) -> dict | None:
    """The labeller's validation accuracy at the start and after the last relabelling; how many relabellings
    there were, and how many of them replaced the labeller."""
    try:
        log = pd.read_csv(labels_csv)[list(LABEL_FIELDS)].astype(float).dropna()
    except (OSError, ValueError, KeyError):
        return None
    if log.empty:
        return None
    return {"first": log["val_accuracy"].iloc[0], "last": log["val_accuracy"].iloc[-1], "rounds": len(log) - 1,
            "replaced": int(log["replaced"].sum()), "images": int(log["images"].iloc[-1])}


class GanRun:
    """One training run in a folder: models, optimisers, position, and the files it writes."""

    def __init__(self, folder: Path, config: GanConfig, data: Digits, probe: FidProbe | None = None,
                 device: torch.device = torch.device("cpu"), clusters: tuple[torch.Tensor, torch.Tensor] | None = None,
                 labels: Labels | None = None):
        """clusters: a fresh self-conditioned run's (assignments, shares); a resumed one restores its saved ones.
        labels: what a run with --relabel-every relabels (data is their training set)."""
        self.folder, self.config, self.data, self.probe, self.dev = folder, config, data, probe, device
        self.labels = labels
        spec = config.spec
        torch.manual_seed(config.seed)
        # What the networks are conditioned on: the digits' labels, their k-means clusters, or nothing
        self.classes = data.labels if spec.conditional else None
        layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.g, self.d = (m.to(device, memory_format=layout) for m in (Generator(spec), Discriminator(spec)))
        if clusters is not None:
            self.classes = clusters[0]
            self.g.prior.copy_(clusters[1])
        self.g_ema = copy.deepcopy(self.g).eval() if config.ema else None
        self.rank, self.world = distributed.rank(), distributed.world()
        self.main = self.rank == 0  # the one process that writes the folder
        self.G, self.D = (self.g, self.d) if self.world == 1 else (
            DistributedDataParallel(m, device_ids=[device.index or 0] if device.type == "cuda" else None)
            for m in (self.g, self.d))
        self.opt_g = torch.optim.Adam(self.g.parameters(), config.lr_g, betas=(config.beta1, config.beta2))
        self.opt_d = torch.optim.Adam(self.d.parameters(), config.lr_d, betas=(config.beta1, config.beta2))
        self.noise = torch.Generator().manual_seed(derived_seed(config.seed, 1))
        self.step = self.epoch = self.position = 0  # position: batches done inside the current epoch
        self.seconds = 0.0  # training time so far, over all sessions, not counting measurements
        self.release = lambda: None  # start() sets it: let go of the folder's lock
        fixed = torch.Generator().manual_seed(derived_seed(config.seed, 2))
        self.fixed_z = torch.randn(100, spec.nz, generator=fixed)
        self.fixed_y = torch.arange(10).repeat_interleave(10) if spec.conditional else None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // (self.config.batch_size * self.world)

    @property
    def eval_steps(self) -> int:
        return max(1, round(self.config.eval_every * self.steps_per_epoch)) if self.probe else 0

    def sampler(self) -> Generator:
        return self.g_ema if self.g_ema is not None else self.g

    def state(self) -> dict:
        return {
            "config": self.config.as_dict(), "g": self.g.state_dict(), "d": self.d.state_dict(),
            "g_ema": self.g_ema.state_dict() if self.g_ema is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "epoch": self.epoch, "position": self.position, "seconds": self.seconds,
            "noise_rng": self.noise.get_state(), "torch_rng": torch.get_rng_state(), "world": self.world,
            "clusters": self.classes.short() if self.config.spec.clusters else None,
            "labeller": self.labels.labeller.state_dict() if self.labels else None,
            "assigned": self.labels.assigned if self.labels else None,
        }

    def restore(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        if self.g_ema is not None:
            self.g_ema.load_state_dict(state["g_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        # Saved by another number of processes: go on from the same image of the epoch (or just before it).
        self.position = self.position * state.get("world", 1) // self.world
        self.seconds = state.get("seconds", 0.0)
        self.noise.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.config.spec.clusters:  # as saved: k-means may round differently on other thread counts
            saved = state["clusters"]
            if not (isinstance(saved, torch.Tensor) and saved.dtype in (torch.int16, torch.int32, torch.int64)
                    and saved.shape == (len(self.data),) and 0 <= saved.min() <= saved.max() < self.config.spec.clusters):
                raise ValueError("its cluster assignments do not fit the training set")
            self.classes = saved.long()
            for g in (self.g, self.g_ema):
                if g is not None:
                    g.check_prior()
        if (self.labels is None) != (state.get("assigned") is None):
            raise ValueError("its relabelling state does not match its config")
        if self.labels:
            self.labels.restore(state["labeller"], state["assigned"])
            self.data = self.labels.training_set()
            self.classes = self.data.labels

    def relabel(self) -> None:
        """The classifier being improved, trained on the GAN's samples of now, may become the labeller (see
        Labels.improve; labels.csv); its time counts as training time."""
        tick = time.perf_counter()
        replaced = self.labels.improve(self.sampler(), indexed_seed(derived_seed(self.config.seed, 3), self.epoch),
                                       least=self.config.batch_size * self.world)
        if replaced:
            self.data = self.labels.training_set()
            self.classes = self.data.labels
        self.seconds += time.perf_counter() - tick
        self.log_labels(replaced)

    def log_labels(self, replaced: bool = False) -> None:
        if not self.main:
            return
        path = self.folder / "labels.csv"
        if path.exists() and path.stat().st_size and self.step in pd.read_csv(path)["step"].tolist():
            return  # resumed from the step-0 checkpoint
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, LABEL_FIELDS)
            if not path.stat().st_size:
                writer.writeheader()
            writer.writerow({"step": self.step, "epoch": self.epoch, "val_accuracy": self.labels.accuracy(),
                             "images": len(self.data), "replaced": int(replaced)})

    def checkpoint(self) -> None:
        """checkpoint.pt is the run's one commit point, so it is written last: resuming rewrites the generator and
        trims the logs to its step, so a kill at any instant costs at most the steps since. A second Ctrl-C or
        SIGTERM during the save waits for it to end (see _Interrupts)."""
        if not self.main:
            return
        _Interrupts.saving = True
        try:
            self.write_generator()
            save_training(self.folder / "checkpoint.pt", self.state())
        finally:
            _Interrupts.saving = False

    def write_generator(self) -> None:
        save_generator(self.folder / "generator.pt", self.config.spec, self.sampler().state_dict(),
                       {"run": self.config.as_dict(), "step": self.step, "epoch": self.epoch})

    def sample_grid(self) -> None:
        if not self.main:
            return
        g = self.sampler()
        was_training = g.training
        g.eval()
        y = None if self.fixed_y is None else self.fixed_y.to(self.dev)
        with torch.inference_mode(), autocast(self.dev):
            images = to_uint8(g(self.fixed_z.to(self.dev), y).float()).cpu()
        g.train(was_training)
        save_grid(images, self.folder / "samples" / f"step_{self.step:08d}.png")

    def measure(self) -> None:
        """Append the sampling generator's FID to metrics.csv, once per step, in the columns the file
        already has (a run begun by an older version lacks class_gap)."""
        if not self.main:
            return
        path = self.folder / "metrics.csv"
        fields, steps = METRIC_FIELDS, []
        if path.exists() and path.stat().st_size:
            log = pd.read_csv(path)
            fields, steps = tuple(log.columns), log["step"].tolist()
        if self.step in steps:  # resumed from the step-0 checkpoint
            return
        row = {"step": self.step, "epoch": self.epoch + self.position / self.steps_per_epoch, "minutes": self.seconds / 60,
               **self.probe(self.sampler()), "floor": self.probe.floor}
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            if not steps and not path.stat().st_size:
                writer.writeheader()
            writer.writerow(row)

    def epoch_order(self) -> torch.Tensor:
        return torch.randperm(len(self.data), generator=torch.Generator().manual_seed(
            derived_seed(self.config.seed * 100_003, self.epoch)))

    def train_step(self, idx: torch.Tensor) -> dict:
        """One D and one G update on the global batch idx, of which this process takes its slice."""
        cfg = self.config
        dev = self.dev
        mine = slice(self.rank * cfg.batch_size, (self.rank + 1) * cfg.batch_size)
        idx = idx[mine]
        real = to_model(self.data.images[idx]).to(dev)
        y = None if self.classes is None else self.classes[idx].to(dev)
        # CPU noise, drawn for the global batch: the same on any device and in any number of processes
        z = torch.randn(len(idx) * self.world, cfg.spec.nz, generator=self.noise)[mine].to(dev)
        seen = (lambda x: diff_augment(x, self.noise)) if cfg.diffaug else (lambda x: x)
        penalise = cfg.r1 > 0 and self.step % R1_EVERY == 0
        with autocast(dev):
            fake = self.G(z, y)
            real = seen(real)
            d_real, d_fake = self.D(real.requires_grad_(penalise), y), self.D(seen(fake.detach()), y)
            if cfg.loss == "bce":
                d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                          + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            else:
                d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            penalty = r1_penalty(d_real, real, cfg.r1) if penalise else 0.0
        self.opt_d.zero_grad(set_to_none=True)
        (d_loss + penalty).backward()
        self.opt_d.step()

        with autocast(dev):
            g_out = self.d(seen(fake), y)  # not through DDP: D's gradients from this pass are thrown away
            g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out)) if cfg.loss == "bce" else -g_out.mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()

        if self.g_ema is not None:
            # Warm-up: early on the average would still be mostly the random initial weights
            # (0.999 ** 800 = 45%), so the decay grows with the step count as in TF's EMA.
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for e, p in zip(self.g_ema.parameters(), self.g.parameters()):
                    e.lerp_(p, 1 - decay)
                for e, b in zip(self.g_ema.buffers(), self.g.buffers()):
                    e.copy_(b)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
                "d_real": torch.sigmoid(d_real).mean().item(), "d_fake": torch.sigmoid(d_fake).mean().item()}


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma/2 * mean ||grad_x D(x)||^2 over the real images, times R1_EVERY because it is only added on
    every R1_EVERY-th step (lazy regularisation keeps the same strength at 1/16 of the cost)."""
    grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.square().sum((1, 2, 3)).mean() * (gamma / 2 * R1_EVERY)


SPEC_OPTIONS = ("nz", "g_width", "d_width", "conditional", "sn", "mbstd", "deep", "clusters")


def make_config(arch: str | None = "dcgan", **options) -> GanConfig:
    """The preset of `arch`, then the options given; None (or leaving one out) means the preset's value."""
    unknown = set(options) - set(SPEC_OPTIONS) - {f.name for f in fields(GanConfig)} - {"labeller_sha256"}
    if unknown:
        raise InputError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in options.items() if v is not None}
    if "min_confidence" in given and not given.get("labeller"):
        raise InputError("--min-confidence is the threshold of --labeller's labels: give both")
    spec = GanSpec.preset(arch or "dcgan", **{k: given.pop(k) for k in SPEC_OPTIONS if k in given})
    if "labeller" in given:
        given["labeller"] = str(given["labeller"])
    return GanConfig(**{"spec": spec, **TRAIN_PRESETS[spec.arch], **given})


def resumed_config(folder: Path, epochs: int | None = None, eval_every: float | None = None, **options) -> GanConfig:
    """The config of the run saved in `folder`, with a new total of epochs and FID schedule if given. Any other
    option given must match the saved run: a resumed run keeps its recipe, so a changed one is refused."""
    path = folder / "checkpoint.pt"
    try:
        saved = GanConfig.from_dict(load_training(path)["config"])
        saved.check()
    except (KeyError, TypeError, InputError) as e:
        raise InputError(f"{path}: no usable config in this checkpoint ({e})") from None
    have = {**saved.__dict__, **saved.spec.__dict__}  # every field: as_dict leaves out clusters when off
    if options.get("labeller") is not None:
        options["labeller"] = str(Path(options["labeller"]).resolve())
    changed = [f"--{k.replace('_', '-')} {v} (saved: {have[k]})" for k, v in options.items()
               if v is not None and k in have and v != have[k]]
    if changed:
        raise InputError(f"--resume continues {folder} with its saved settings; these differ: {', '.join(changed)}. "
                         f"Drop them, or train afresh in a new --out")
    new = {"epochs": epochs, "eval_every": eval_every}
    return GanConfig(**{**saved.__dict__, **{k: v for k, v in new.items() if v is not None}})


def training_set(train_set: Digits, config: GanConfig, device: torch.device = torch.device("cpu")
                 ) -> tuple[Digits, Labels | None]:
    """What the GAN learns from: all of train; or classify's labelled subset of n_real; or, with a labeller
    (semi-supervised), that plus the rest of the training pool with the labels it is confident of, and those
    labels (to relabel)."""
    if config.n_real is None:
        return train_set, None
    labelled = mnist.labelled_subset(train_set.labels, config.n_real, config.seed)
    if not config.labeller:
        return train_set.subset(labelled), None
    if not Path(config.labeller).is_file():
        raise InputError(f"{config.labeller}: the labeller this run started with is missing")
    if sha256_of(config.labeller) != config.labeller_sha256:
        raise InputError(f"{config.labeller}: not the labeller this run started with (sha256 {config.labeller_sha256[:16]}...)")
    _, val = mnist.validation_split(train_set.labels)
    labels = Labels(train_set.subset(labelled), train_set.images[mnist.unlabelled_pool(train_set.labels, labelled)],
                    train_set.subset(val), load_classifier(config.labeller)[0], config.min_confidence, device)
    return labels.training_set(), labels


def _check_labeller(config: GanConfig) -> None:
    """The labeller must have seen the labelled subset alone: classify's checkpoint for the same n_real and
    seed, with no synthetic data; the pinned reference and judge saw all of train and are refused."""
    _, payload = load_classifier(config.labeller)  # refuses a missing or foreign file before anything is written
    if sha256_of(config.labeller) in (REFERENCE_SHA256, JUDGE_SHA256):
        raise InputError(f"{config.labeller}: the pinned reference and judge saw every label; use a classifier of the subset")
    c = payload.get("config", {})
    trained = (c.get("n_real"), c.get("seed"), c.get("n_synthetic"), c.get("val_size"), c.get("dataset"))
    if trained != (config.n_real, config.seed, 0, mnist.VAL_SIZE, config.dataset):
        raise InputError(f"{config.labeller}: trained on n_real {trained[0]}, seed {trained[1]}, {trained[2]} synthetic, "
                         f"val-size {trained[3]}, {trained[4]}; this run's labelled subset needs "
                         f"`classify --n-real {config.n_real} --seed {config.seed}` (no synthetic, default validation)")


def _folder_problem(folder: Path, resume: bool) -> str | None:
    """Why the run cannot be written in folder, or None."""
    try:
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file: --out names the run's folder"
        if not resume and folder.exists() and any(not _temporary(p) for p in folder.iterdir()):
            return f"{folder} is not empty: choose a new --out, or --resume the run in it"
        check_folder_of(folder)
    except InputError as e:
        return str(e)
    return None


def start(folder: Path, config: GanConfig, train_set: Digits, resume: bool, device: str = "cpu") -> GanRun:
    """A fresh run in an empty (or new) folder, or, resuming, the run saved there (config from resumed_config)."""
    config.check()
    dev = resolve_device(device)
    distributed.join(dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())  # under torchrun, this process's own GPU
    if config.labeller and not config.labeller_sha256:
        _check_labeller(config)
        config = GanConfig(**{**config.__dict__, "labeller": str(Path(config.labeller).resolve()),
                              "labeller_sha256": sha256_of(config.labeller)})
    if config.relabel_every and distributed.world() > 1:
        raise InputError("--relabel-every trains its classifier in one process: run it without torchrun")
    main = distributed.rank() == 0
    problem = distributed.agreed(_folder_problem(folder, resume) if main else None)  # before labelling the pool
    if problem:
        raise InputError(problem)
    data, labels = training_set(train_set, config, dev)
    if config.spec.clusters > len(data):
        raise InputError(f"{config.spec.clusters:,} clusters need at least as many training images, and there are "
                         f"{len(data):,}: ask for fewer, or --clusters 0")
    if len(data) < config.batch_size * distributed.world():
        raise InputError(f"a global batch of {config.batch_size * distributed.world():,} is larger than the "
                         f"{len(data):,} training images")
    lock, problem = None, None
    if main:  # the other processes write nothing there
        try:
            folder.mkdir(exist_ok=True)
            lock = lock_folder(folder)
        except InputError as e:
            problem = str(e)
    problem = distributed.agreed(problem)  # the others go on once the folder is checked and held
    if problem:
        if lock is not None:
            os.close(lock)
        raise InputError(problem)
    try:
        clusters = kmeans(data.images, config.spec.clusters, config.seed) if config.spec.clusters and not resume else None
        run = GanRun(folder, config, data, FidProbe(train_set) if config.eval_every and main else None, dev, clusters,
                     labels if config.relabel_every else None)
        if resume:
            _restore(run, load_training(folder / "checkpoint.pt"))
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    if lock is not None:
        run.release = weakref.finalize(run, os.close, lock)  # at the end of training, or when the run is dropped
    return run


def _temporary(path: Path) -> bool:
    """What a killed save leaves (.NAME.PID.tmp): not a run, so a fresh run may start in its folder."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _restore(run: GanRun, state: dict) -> None:
    path = run.folder / "checkpoint.pt"
    for part in ("g", "d", "g_ema", "labeller"):  # before loading, which would cast complex weights to real
        if isinstance(state.get(part), dict):
            check_finite(path, state[part])
    try:
        run.restore(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: damaged, it does not restore this run "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if run.main:
        _trim_csv(run.folder / "losses.csv", run.step)
        _trim_csv(run.folder / "metrics.csv", run.step)
        _trim_csv(run.folder / "labels.csv", run.step)
        run.write_generator()  # a kill between the two saves left it at another step


def train(run: GanRun, max_minutes: float | None = None, progress: bool = True) -> Outcome:
    """Train until the epochs are done, the time budget ends, Ctrl-C, or the losses diverge; the folder's lock is
    let go however it ends."""
    try:
        return _loop(run, max_minutes, progress)
    finally:
        run.release()
        distributed.leave()


def _loop(run: GanRun, max_minutes: float | None, progress: bool) -> Outcome:
    cfg = run.config
    total = cfg.epochs * run.steps_per_epoch
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
    start_time, start_step = time.perf_counter(), run.step
    log = _CsvLog(run.folder / "losses.csv" if run.main else None)
    bar = tqdm(total=total, initial=run.step, desc="gan", unit="step", disable=None if progress and run.main else True)
    batch = cfg.batch_size * run.world  # the global batch, of which each process takes its slice
    stopped, message = "finished", ""
    with _Interrupts() as interrupts:
        if run.step == 0:
            run.checkpoint()  # so that even a run that diverges at once leaves a checkpoint to resume or inspect
            run.sample_grid()
            if run.probe:
                run.measure()
            if run.labels:
                run.log_labels()
        while run.epoch < cfg.epochs:
            order = run.epoch_order()
            while run.position < run.steps_per_epoch:  # a relabelling changes the training set
                tick = time.perf_counter()
                losses = run.train_step(order[run.position * batch:(run.position + 1) * batch])
                run.seconds += time.perf_counter() - tick
                diverged = not all(math.isfinite(v) and abs(v) < EXPLODED for v in (losses["d_loss"], losses["g_loss"]))
                # Every process stops at the same step, whichever of them saw the reason.
                signum, late, diverged = distributed.largest(
                    [interrupts.signal, time.monotonic() > deadline, diverged], run.dev)
                if diverged:
                    stopped = "diverged"
                    message = (f"losses diverged at step {run.step + 1} (D {losses['d_loss']:.3g}, G {losses['g_loss']:.3g}); "
                               f"kept the last good checkpoint {run.folder / 'checkpoint.pt'}: try lower learning rates")
                    return _finish(run, stopped, message, start_time, start_step, bar, log, save=False)
                run.step += 1
                run.position += 1
                rate = (run.step - start_step) * batch / (time.perf_counter() - start_time)
                log.add(run.step, run.epoch + 1, losses, rate)
                bar.update()
                bar.set_postfix(d=f"{losses['d_loss']:.3f}", g=f"{losses['g_loss']:.3f}", img_s=f"{rate:.0f}")
                if cfg.sample_every and run.step % cfg.sample_every == 0:
                    run.sample_grid()
                if run.probe and run.step % run.eval_steps == 0:
                    run.measure()
                if signum or late:
                    stopped = "interrupted" if signum else "time budget"
                    return _finish(run, stopped, message, start_time, start_step, bar, log, signum=signum)
            run.epoch += 1
            run.position = 0
            if run.labels and run.epoch % cfg.relabel_every == 0:
                run.relabel()
            run.sample_grid()
            log.flush()
            run.checkpoint()
    return _finish(run, stopped, message, start_time, start_step, bar, log)


def _picture(path: Path) -> Image.Image | None:
    """The grid, closed at once (a long run has thousands); None for a file that is not an image."""
    try:
        with Image.open(path) as picture:
            return picture.copy()
    except OSError:
        return None


def _finish(run, stopped, message, start_time, start_step, bar, log, save=True, signum=0) -> Outcome:
    bar.close()
    log.flush()
    if save:
        run.checkpoint()
    if run.main and (run.step > start_step or stopped == "finished"):
        plot_losses(run.folder / "losses.csv", run.folder / "losses.png")
        if fid_summary(run.folder / "metrics.csv"):  # a damaged log is not drawn
            plot_fid(run.folder / "metrics.csv", run.folder / "fid.png")
        grids = sorted((run.folder / "samples").glob("step_*.png"))
        frames = grids[::math.ceil(len(grids) / GIF_FRAMES)]
        frames += grids[-1:] if frames[-1] != grids[-1] else []
        pictures = [p for p in map(_picture, frames) if p is not None]
        if pictures:
            save_gif(pictures, run.folder / "progress.gif")
    seconds = time.perf_counter() - start_time
    rate = (run.step - start_step) * run.config.batch_size * run.world / seconds if seconds else 0.0
    return Outcome(stopped, run.step, run.epoch, seconds, rate, run.folder, run.config, message,
                   fid_summary(run.folder / "metrics.csv"), labels_summary(run.folder / "labels.csv"), signum, run.main)


class _Interrupts:
    """Ctrl-C or SIGTERM (kill, timeout, a scheduler, a session ending) ends training after the current
    step, so the checkpoint holds whole steps only; a second one stops at once."""

    def __init__(self):
        self.signal = 0
        self.active = threading.current_thread() is threading.main_thread()

    saving = False  # while a checkpoint is written, a second press only asks to stop: the save must finish

    def _handle(self, signum, frame):
        if self.signal and not _Interrupts.saving:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self):
        if self.active:
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        if self.active:
            for s, handler in self.previous.items():
                signal.signal(s, handler)


class _CsvLog:
    """Mean losses every LOG_EVERY steps, appended to losses.csv."""

    def __init__(self, path: Path | None):  # None: another process writes the log
        self.path, self.rows, self.acc = path, [], []

    def add(self, step: int, epoch: int, losses: dict, rate: float) -> None:
        self.acc.append(losses)
        if step % LOG_EVERY == 0:
            mean = {k: sum(a[k] for a in self.acc) / len(self.acc) for k in losses}
            self.rows.append({"step": step, "epoch": epoch, **mean, "images_per_s": rate})
            self.acc = []

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if self.path is None:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)


def _trim_csv(path: Path, step: int) -> None:
    """Forget rows logged after the checkpoint we resume from (a diverged run logs past it), and any line that is
    not a row of this log (a write cut short by a kill, or damage): the log stays readable."""
    if path.exists():
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        header = lines[:1]
        width = header[0].count(",") if header else 0

        def keep(line: str) -> bool:
            first = line.split(",")[0]
            return line.endswith("\n") and line.count(",") == width and first.isdigit() and int(first) <= step

        text = "".join(header + [ln for ln in lines[1:] if keep(ln)])
        write_atomic(path, lambda tmp: tmp.write_text(text))
