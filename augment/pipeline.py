"""generate -> label -> HDF5: draw digits, pseudo-label them, keep the confident ones, write the file."""

import itertools
import shutil
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
from data import distributed, mnist
from data.errors import InputError, prepare_output
from data.files import autocast, check_seed, device_of, indexed_seed, resolve_device, sha256_of
from data.pixels import to_uint8
from data.synthetic import MAX_ROWS, SyntheticWriter, join_shards, shard_path

MAX_DRAWS_PER_KEPT = 50  # bounded tries: give up after drawing this many images per image asked for
FORESIGHT = 20_000  # draws after which the pass rate is known well enough to give up early
MIN_DRAWN = 1_000  # draw_to_mix's fewest samples
ROW_BYTES = 400  # a row of the file, compressed (about 300 measured), without latents


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
    drawn: int  # in whole batches, up to the one that completed the file
    kept: int
    passed: int  # drawn images that passed every test: the pass rate is passed / drawn
    seconds: float
    class_counts: list[int]
    agreement: float | None  # conditional: how often the labeller agrees with the requested class
    failed: dict  # drawn images failing each test: confidence, realism, agreement with --agree
    main: bool = True  # False in torchrun's other processes, whose shards process 0 joined


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
             data_dir: Path | None = None, device: str = "cpu", merge: str = "vds") -> Report:
    """agree_path: a second classifier that must give the same label; data_dir: MNIST, for --min-realism.

    The draws are a fixed sequence of batches, each a pure function of (seed, its index). Under torchrun, each
    of W processes draws every W-th batch into its own shard beside `out`; all of them apply the one keep rule
    to every batch in sequence order, so process 0 can join the shards (merge: a virtual dataset over them, or
    a copy) into the very file a single process writes."""
    config.check()
    if merge not in MERGES:
        raise InputError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
    prepare_output(out, overwrite)
    dev = resolve_device(device)
    distributed.join(dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())  # under torchrun, this process's own GPU
    rank, world = distributed.rank(), distributed.world()
    g, g_payload = load_generator(generator_path)
    g = g.to(dev)
    labeller, l_payload = classifier_checkpoint.load(labeller_path)
    labeller = labeller.to(dev)
    if config.digit is not None and not g.spec.conditional:
        raise InputError("--digit needs a conditional generator (train --conditional)")
    second, a_payload = classifier_checkpoint.load(agree_path) if agree_path else (None, {})
    dataset = g_payload["info"]["run"]["dataset"]
    for path, payload in ((labeller_path, l_payload), (agree_path, a_payload)):
        learnt = payload.get("config", {}).get("dataset", dataset) if isinstance(payload.get("config"), dict) else dataset
        if learnt != dataset:
            raise InputError(f"{path}: a classifier of {learnt!r} images, but the generator draws {dataset!r} ones")
    if agree_path and sha256_of(agree_path) in (sha256_of(labeller_path),
                                                                      classifier_checkpoint.JUDGE_SHA256):
        raise InputError(f"{agree_path}: --agree needs a classifier independent of the labeller and of the judge "
                         f"(train one with classify --seed)")
    real = mnist.load("train", dataset, data_dir) if config.min_realism else None
    select = Selection(config.min_realism, second, real)
    spec = g.spec
    need, free = config.n * (ROW_BYTES + 4 * spec.nz * config.save_latents), shutil.disk_usage(out.parent).free
    if need > free:
        raise InputError(f"{out.parent}: {config.n:,} images need about {need / 1e6:,.0f} MB, {free / 1e6:,.0f} MB free")
    attrs = {
        "dataset": dataset,
        "generator_sha256": sha256_of(generator_path),
        "labeller_sha256": sha256_of(labeller_path),
        "seed": config.seed, "min_confidence": config.min_confidence, "balance": config.balance,
        "config": {**asdict(config), "generator": str(generator_path), "labeller": str(labeller_path), "spec": spec.as_dict(),
                   "agree": str(agree_path) if agree_path else None,
                   "agree_sha256": sha256_of(agree_path) if agree_path else None},
    }
    shards = [out] if world == 1 else [shard_path(out, r, world) for r in range(world)]
    tally, layout = _Tally(config, len(select.tests)), []  # layout: (process, rows kept) per batch, in order
    start = time.perf_counter()
    bar = tqdm(total=config.n, desc="generate", unit="img", disable=None if progress and rank == 0 else True)
    writer, problem = None, None
    try:  # until `with writer` holds it, an error or a Ctrl-C here must discard it, lock included
        try:
            writer = SyntheticWriter(shards[rank], attrs, nz=spec.nz if config.save_latents else None,
                                     conditional=spec.conditional, overwrite=overwrite)
        except InputError as e:
            problem = str(e)
        problem = distributed.agreed(problem)  # a shard in the way of one process stops them all
        if problem:
            raise InputError(problem)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    with writer, torch.inference_mode():
        for first in itertools.count(0, world):
            if tally.hopeless(MAX_DRAWS_PER_KEPT * config.n):
                raise InputError(_shortfall(tally.counts, tally.quota, config, tally.drawn))
            batch = _draw(g, labeller, select, config, first + rank, dev)
            for r, seen in enumerate(distributed.gathered(batch["seen"], dev)):
                keep = tally.add(seen[:config.batch_size], seen[config.batch_size:])
                layout.append((r, int(keep.sum())))
                if r == rank and keep.any():
                    writer.append(*(None if v is None else v[keep] for v in batch["rows"]))
                bar.update(int(keep.sum()))
                if tally.done:
                    break
            if tally.done:
                break
    bar.close()
    distributed.barrier()  # every shard is complete
    if world > 1 and rank == 0:
        join_shards(out, shards, layout, merge, overwrite)
    distributed.leave()
    return Report(tally.drawn, int(tally.counts.sum()), tally.passed, time.perf_counter() - start, tally.counts.tolist(),
                  tally.agree / tally.drawn if spec.conditional else None, dict(zip(select.tests, tally.failed)),
                  rank == 0)


MERGES = ("vds", "copy")
MAX_TESTS = 3  # confidence, realism, agreement


def _draw(g, labeller, select: Selection, config: GenerateConfig, index: int, dev: torch.device) -> dict:
    """Batch `index` of the sequence: its rows for the file, and what every process must see of it to apply
    the keep rule (the labels of the samples passing every test, -1 for the others; then its tallies)."""
    noise = torch.Generator().manual_seed(indexed_seed(config.seed, index))
    z = torch.randn(config.batch_size, g.spec.nz, generator=noise)  # on the CPU: the same on any device
    asked = None
    if g.spec.conditional:  # every class in turn, or the one asked for
        asked = (torch.full((len(z),), config.digit) if config.digit is not None
                 else (index * len(z) + torch.arange(len(z))) % 10)
    with autocast(dev):
        images = to_uint8(g(z.to(dev), None if asked is None else asked.to(dev)).float()).cpu()
    probs, confident = pseudo_label(labeller, images, config.min_confidence)
    confidence, labels = probs.max(1)
    passed, failed = select(images, labels, confident)
    agree = int((labels == asked).sum()) if asked is not None else 0
    tallies = torch.tensor([agree, *failed, *[0] * (MAX_TESTS - len(failed))])
    seen = torch.cat([torch.where(passed, labels, -1), tallies])
    rows = (images, labels.to(torch.uint8), confidence, probs.half(), z,
            None if asked is None else asked.to(torch.int16))
    return {"seen": seen, "rows": rows}


class _Tally:
    """The keep rule, applied by every process to every batch in sequence order: a passing sample is kept while
    n (or, balancing, its class's quota) is not reached; draws are counted up to the batch that completes it."""

    def __init__(self, config: GenerateConfig, tests: int):
        self.n, self.quota, self.tests = config.n, targets(config), tests
        self.counts, self.drawn, self.passed, self.agree, self.failed = np.zeros(10, np.int64), 0, 0, 0, [0] * tests

    @property
    def done(self) -> bool:
        return self.counts.sum() >= self.n

    def hopeless(self, budget: int) -> bool:
        """The draws are spent, or, after enough of them to tell (FORESIGHT), the pass rate so far would need
        more than the budget: say so now rather than after hours of drawing."""
        if self.drawn >= budget:
            return True
        if self.drawn < FORESIGHT:
            return False
        need = np.array([self.n]) if self.quota is None else self.quota
        have = np.array([self.counts.sum()]) if self.quota is None else self.counts
        return bool((have * budget < need * self.drawn).any())

    def add(self, labels: torch.Tensor, tallies: torch.Tensor) -> torch.Tensor:
        self.drawn += len(labels)
        self.agree += int(tallies[0])
        self.failed = [a + int(b) for a, b in zip(self.failed, tallies[1:1 + self.tests])]
        passing = labels >= 0
        self.passed += int(passing.sum())
        labels = labels.clamp(min=0)
        if self.quota is not None:
            keep = passing & _within_quota(labels, passing, self.quota - self.counts)
        else:
            keep = passing & (torch.cumsum(passing, 0) <= self.n - self.counts.sum())
        self.counts += np.bincount(labels[keep].numpy(), minlength=10)
        return keep


def _within_quota(labels: torch.Tensor, keep: torch.Tensor, room: np.ndarray) -> torch.Tensor:
    """Keep a confident sample only while its class still has room (in drawing order)."""
    onehot = torch.nn.functional.one_hot(labels, 10) * keep[:, None]
    rank = torch.cumsum(onehot, 0)[torch.arange(len(labels)), labels]  # 1-based rank within its class
    return rank <= torch.from_numpy(room)[labels]


def _shortfall(counts, quota, config: GenerateConfig, drawn: int) -> str:
    if quota is None:
        return (f"only {counts.sum():,} samples passed the filters after drawing {drawn:,}, too few to reach "
                f"{config.n:,} within {MAX_DRAWS_PER_KEPT} draws each: lower --min-confidence or --min-realism, "
                f"or drop --agree")
    short = [f"{c} ({counts[c]:,}/{quota[c]:,})" for c in range(10) if counts[c] < quota[c]]
    return (f"classes too rare at confidence >= {config.min_confidence} after drawing {drawn:,}: "
            f"{', '.join(short)}; lower --min-confidence or --min-realism, drop --agree, or drop --balance")


def draw_to_mix(g, want: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples for a mix that needs `want` of them: twice as many (at least MIN_DRAWN), so that the labeller
    may reject some."""
    return draw(g, max(MIN_DRAWN, 2 * want), seed)


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
