"""The augmentation benchmark: real labelled sizes x augmentations x seeds, each classifier tested on the
real test set. Honest by construction: per (size, seed), one labeller trained on the labelled subset alone
labels everything mixed in (the pool file's own labels are ignored), and every classifier of a size gets
the same number of optimiser steps (its real-only budget), whatever is mixed in. Rows are appended to a
CSV as they finish, so an interrupted sweep resumes where it stopped."""

import fcntl
import json
import os
import queue
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from data.files import sha256_of, write_atomic
from classifier.model import DigitCNN
from classifier.mixing import mix, self_train
from classifier.train import TrainConfig, evaluate, fit
from data import distributed, mnist
from data.errors import InputError
from data.mnist import Digits
from data.synthetic import load_synthetic

VARIANTS = {
    "real": "real labelled images only",
    "classical": "real + classical affine augmentation (this classifier is the labeller)",
    "synthetic": "real + GAN samples labelled by the labeller",
    "synthetic+classical": "the same, with classical augmentation",
    "conditional": "real + a conditional GAN's class-balanced samples (trained on the labelled subset and the "
                   "labeller's confident labels of the rest), kept where the labeller agrees with the class asked for",
    "conditional+classical": "the same, with classical augmentation",
    "filtered": "real + the GAN samples on the real manifold (realism score), labelled by the labeller",
    "filtered+classical": "the same, with classical augmentation",
    "pseudo-real": "real + the other real train images, without their labels, labelled by the labeller",
    "self-training": "real + the other real train images with classical augmentation, relabelled by the last "
                     "classifier and retrained, K rounds in all (the standard semi-supervised baseline)",
    "gan-discriminator": "not a DigitCNN trained on a mix: the discriminator of a semi-supervised GAN (Salimans et al. "
                         "2016), trained on the labelled subset with classical augmentation and the other train images "
                         "without labels, for its own number of steps",
    "classical-matched": "real + classical augmentation, as classical, but for the gan-discriminator's number of "
                         "steps: the control that tells what its GAN adds from what its longer training adds",
    "gan-discriminator+self-training": "the gan-discriminator's classifier teaching self-training: K rounds of a "
                                       "DigitCNN with classical augmentation on real + every other train image the "
                                       "last model labels confidently, epochs over them (what semi-supervised does)",
    "classical-matched+self-training": "the same self-training, taught by classical-matched: its control",
}
COLUMNS = ["size", "variant", "ratio", "seed", "accuracy", "errors", "n_real", "n_extra", "steps", "seconds"]


@dataclass(frozen=True)
class Sweep:
    sizes: tuple[int, ...] = (100, 1000, 10000, 60000)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    relabel_rounds: int = 0
    min_confidence: float = 0.9
    epochs: int = 12
    min_steps: int = 600
    val_size: int = mnist.VAL_SIZE  # labelled subsets are drawn as classify draws them, never from validation

    def check(self, train_size: int) -> None:
        pool = train_size - self.val_size
        if not self.sizes or not all(0 < s <= pool or s == train_size for s in self.sizes):
            raise InputError(f"sizes must be in 1..{pool:,} (the training pool without validation) or {train_size:,} "
                             f"(every label), got {list(self.sizes)}")
        if not self.ratios or not all(0 < r <= 100 for r in self.ratios):
            raise InputError(f"ratios must be in (0, 100], got {list(self.ratios)}")
        if not 1 <= len(self.seeds) <= 100:
            raise InputError(f"need 1..100 seeds, got {len(self.seeds)}")
        if not 0 <= self.relabel_rounds <= 100 or not 0 <= self.min_confidence < 1:
            raise InputError("relabel-rounds must be in 0..100 and min-confidence in [0, 1)")
        self.config(min(self.sizes), "none", 0).check()  # the budget: epochs, min-steps

    def config(self, size: int, augment: str, seed: int) -> TrainConfig:
        """The size's real-only budget (epochs over the real subset, at least min_steps), fixed in steps."""
        steps = TrainConfig(epochs=self.epochs, min_steps=self.min_steps).total_steps(size)
        return TrainConfig(epochs=self.epochs, min_steps=self.min_steps, augment=augment, seed=seed, steps=steps)


class Matched:
    """The classical row again, for `steps` steps instead of the size's budget (a learner)."""

    def __init__(self, sweep: Sweep, steps: int, device: str):
        self.sweep, self.steps, self.device = sweep, steps, device

    def settings(self) -> dict:
        return {"steps": self.steps}

    def __call__(self, size: int, seed: int, real: Digits, unlabelled: torch.Tensor) -> tuple[DigitCNN, int, int]:
        config = replace(self.sweep.config(size, "classical", seed), steps=self.steps)
        return fit(real, config, device=self.device, progress=False)[0], self.steps, 0


QUICK = Sweep(sizes=(100, 1000), ratios=(1.0,), seeds=(0, 1), min_steps=300)


def read_rows(folder: Path, identity: dict) -> pd.DataFrame:
    """Rows already done in folder, after checking they belong to this very sweep. Its extra variants may be
    added or left out (rows are keyed by variant too), but none may change its settings."""
    saved, identity = folder / "sweep.json", json.loads(json.dumps(identity))  # tuples come back as lists
    before = None
    if saved.is_file():
        try:
            before = json.loads(saved.read_text())
            identity = _extended(before, identity)
        except (ValueError, AttributeError):
            raise InputError(f"{folder} holds another sweep (see its sweep.json): choose another --out or pass "
                             f"--overwrite") from None
    rows = _good_rows(folder / "rows.csv")  # a folder refused here is left as it was
    if identity != before:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(saved, lambda tmp: tmp.write_text(json.dumps(identity, indent=2) + "\n"))
    return rows


def _extended(before: dict, identity: dict) -> dict:
    """identity plus the variants only `before` had; ValueError if they differ in anything else."""
    old, new = before.get("sources", {}), identity.get("sources", {})
    if ({k: v for k, v in before.items() if k != "sources"} != {k: v for k, v in identity.items() if k != "sources"}
            or any(new.get(name, settings) != settings for name, settings in old.items())):
        raise ValueError("another sweep")
    sources = {**old, **new}
    return {**identity, **({"sources": sources} if sources else {})}


def _good_rows(csv: Path) -> pd.DataFrame:
    """rows.csv without a line cut short by a kill, or damaged: such rows are dropped (and so trained again), and
    the file rewritten whole, so that the next row is appended on a line of its own."""
    if not csv.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        rows = pd.read_csv(csv, on_bad_lines="skip", dtype=str)
    except (ValueError, pd.errors.ParserError):
        rows = pd.DataFrame(columns=COLUMNS)
    if list(rows.columns) != COLUMNS:
        raise InputError(f"{csv}: not a rows file of this tool (columns {list(rows.columns)}): choose another --out "
                         f"or pass --overwrite")
    numbers = rows.drop(columns="variant").apply(pd.to_numeric, errors="coerce")
    good = numbers.notna().all(axis=1) & rows.variant.isin(VARIANTS)
    rows = pd.concat([rows[["variant"]], numbers], axis=1)[COLUMNS][good]
    rows = rows.astype({c: int for c in ("size", "seed", "errors", "n_real", "n_extra", "steps")})
    if not good.all() or not csv.read_bytes().endswith(b"\n"):
        write_atomic(csv, lambda tmp: rows.to_csv(tmp, index=False))
    return pd.read_csv(csv)


def identity(sweep: Sweep, pool: Path, dataset: str) -> dict:
    """What every row's value depends on. Sizes, ratios and seeds are left out: rows are keyed by them,
    so a sweep can be extended in the same folder (more sizes, seeds or ratios) and keeps its rows."""
    settings = {k: v for k, v in asdict(sweep).items() if k not in ("sizes", "ratios", "seeds")}
    return {"sweep": settings, "pool": str(pool), "pool_sha256": sha256_of(pool), "dataset": dataset}


class _Cell:
    """One (size, seed): its labelled subset, labeller and rows, training only what is not done yet."""

    def __init__(self, sweep: Sweep, size: int, seed: int, train: Digits, test: Digits, pool: torch.Tensor,
                 done: set, record, device: str = "cpu"):
        self.sweep, self.size, self.seed, self.test, self.pool, self.done, self.record, self.device = \
            sweep, size, seed, test, pool, done, record, device
        labelled = mnist.labelled_subset(train.labels, size, seed, sweep.val_size)
        self.real = train.subset(labelled)
        others = torch.ones(len(train), dtype=torch.bool)
        others[labelled] = False
        self.unlabelled = train.images[others]

    def key(self, variant: str, ratio: float) -> tuple:
        return (self.size, variant, float(ratio), self.seed)

    def row(self, variant: str, ratio: float, data: Digits, augment: str, needed: bool = False):
        """Train and record a row unless it is done; returns the model when trained (or needed later)."""
        if self.key(variant, ratio) in self.done and not needed:
            return None
        config = self.sweep.config(self.size, augment, self.seed)
        start = time.perf_counter()
        model, _ = fit(data, config, device=self.device, progress=False)
        self.tested(variant, ratio, model, len(data) - len(self.real), config.steps, start)
        return model

    def tested(self, variant: str, ratio: float, model, n_extra: int, steps: int, start: float) -> None:
        """Record the row of a trained classifier (tested on real test), unless it is done."""
        if self.key(variant, ratio) in self.done:
            return
        accuracy = evaluate(model, self.test)
        self.record({"size": self.size, "variant": variant, "ratio": float(ratio), "seed": self.seed,
                     "accuracy": accuracy, "errors": round((1 - accuracy) * len(self.test)), "n_real": len(self.real),
                     "n_extra": n_extra, "steps": steps, "seconds": round(time.perf_counter() - start, 1)})

    def taught(self, variant: str, teacher: DigitCNN, steps: int, start: float) -> None:
        """The row of K rounds of self-training from a learner's classifier, on every unlabelled image the last
        model is sure of, each round epochs over its own set (not the size's budget): steps counts the teacher's."""
        student = TrainConfig(epochs=self.sweep.epochs, min_steps=self.sweep.min_steps, augment="classical",
                              seed=self.seed)
        model, rounds = self_train(teacher, self.real, self.unlabelled, self.sweep.relabel_rounds, student,
                                   self.sweep.min_confidence, device=self.device)
        self.tested(variant, 0, model, rounds[-1]["n_unlabelled"], steps + sum(r["step"] for r in rounds), start)

    def mixed(self, images: torch.Tensor, labeller: DigitCNN, ratio: float, source: str,
              labels: torch.Tensor | None = None) -> Digits:
        """The labelled subset plus ratio x its size of `images`: labelled by the labeller, or, with labels (the
        classes a conditional GAN was asked for), kept where the labeller agrees with them."""
        return mix(self.real, images, ratio, self.seed, labels=labels, labeller=labeller,
                   min_confidence=self.sweep.min_confidence, source=self.labelled_by(source))

    def labelled_by(self, source: str) -> str:
        return f"{source} (labeller of {self.size:,} real images, seed {self.seed})"

    def run(self, sources: dict, learners: dict) -> None:
        """real; classical, whose classifier labels everything mixed in; the learners' classifiers, and the
        self-training each teaches; then, per source of extra images and ratio, the mix with and without classical
        augmentation; pseudo-real; self-training."""
        sweep, ratios = self.sweep, self.sweep.ratios
        has_pseudo = len(self.unlabelled) > 0
        later = [self.key(v, r) for r in ratios for name in sources for v in (name, f"{name}+classical")]
        later += [self.key("pseudo-real", r) for r in ratios if has_pseudo]
        later += [self.key("self-training", r) for r in ratios if sweep.relabel_rounds and has_pseudo]
        self.row("real", 0, self.real, "none")
        labeller = self.row("classical", 0, self.real, "classical", needed=any(k not in self.done for k in later))
        for name, learn in learners.items():
            taught = f"{name}+self-training"
            teach = sweep.relabel_rounds and self.key(taught, 0) not in self.done
            if has_pseudo and (teach or self.key(name, 0) not in self.done):
                start = time.perf_counter()
                with distributed.alone():
                    model, steps, extra = learn(self.size, self.seed, self.real, self.unlabelled)
                self.tested(name, 0, model, extra, steps, start)
                if teach:
                    self.taught(taught, model, steps, start)
        if labeller is None:
            return
        for name, source in sources.items():
            if all(self.key(v, r) in self.done for r in ratios for v in (name, f"{name}+classical")):
                continue  # a GAN source may cost minutes of training: only when a row needs it
            with distributed.alone():  # under torchrun, each process trains the GANs of its own cells
                images, labels = source(self.size, self.seed, labeller)
            for ratio in ratios:
                data = self.mixed(images, labeller, ratio, name, labels)
                self.row(name, ratio, data, "none")
                self.row(f"{name}+classical", ratio, data, "classical")
        if not has_pseudo:
            return
        for ratio in ratios:
            self.row("pseudo-real", ratio, self.mixed(self.unlabelled, labeller, ratio, "unlabelled real"), "none")
            if sweep.relabel_rounds and self.key("self-training", ratio) not in self.done:
                start, config = time.perf_counter(), sweep.config(self.size, "classical", self.seed)
                model, rounds = self_train(labeller, self.real, self.unlabelled, sweep.relabel_rounds, config,
                                           sweep.min_confidence, ratio, device=self.device,
                                           source=self.labelled_by("unlabelled real"))
                self.tested("self-training", ratio, model, rounds[-1]["n_unlabelled"], config.steps, start)


def run(sweep: Sweep, pool_path: Path, train: Digits, test: Digits, folder: Path, dataset: str,
        on_row=lambda row: None, overwrite: bool = False, device: str = "cpu", sources: dict | None = None,
        settings: dict | None = None, jobs: int = 1, learners: dict | None = None) -> pd.DataFrame:
    """Run every row of the sweep not yet in folder/rows.csv (overwrite: discard them first, once every
    input has been checked); returns all rows. sources: more extra images than the pool's, by name: each
    (size, seed, labeller) -> (images, the classes asked for or None); learners: classifiers other than a DigitCNN
    trained on a mix, by name: each (size, seed, labelled subset, unlabelled images) -> (classifier, its
    steps, how many unlabelled images it used); settings: what sources and learners depend on.
    jobs: (size, seed) cells trained at once, each in its own process, whose rows this one appends. Under
    torchrun, process r of W takes every W-th cell, and all append to the one rows.csv, under a lock."""
    sweep.check(len(train))
    pool = load_synthetic(pool_path).images
    need = round(max(sweep.ratios) * max(sweep.sizes))
    if len(pool) < need:
        raise InputError(f"{pool_path}: holds {len(pool):,} images; ratio {max(sweep.ratios):g} x {max(sweep.sizes):,} "
                         f"real needs at least {need:,} (before the confidence filter)")
    rank, world = distributed.rank(), distributed.world()
    me = {**identity(sweep, pool_path, dataset), **({"sources": settings} if settings else {})}
    if rank == 0:
        if overwrite:
            for name in ("rows.csv", "sweep.json"):
                (folder / name).unlink(missing_ok=True)
        rows = read_rows(folder, me)
    distributed.barrier()  # sweep.json written and rows.csv repaired, once
    if rank:
        rows = read_rows(folder, me)
    done = {(r.size, r.variant, float(r.ratio), r.seed) for r in rows.itertuples()}
    csv = folder / "rows.csv"

    def record(row: dict) -> None:
        _append(csv, row)
        done.add((row["size"], row["variant"], row["ratio"], row["seed"]))
        on_row(row)

    cells = [(size, seed) for size in sweep.sizes for seed in sweep.seeds][rank::world]
    shared = (sweep, train, test, pool, frozenset(done), device, sources or {}, learners or {})
    if jobs == 1:
        for cell in cells:
            _run_cell(*shared, *cell, record)
    else:
        _in_parallel(jobs, cells, shared, record)
    distributed.barrier()  # every process's rows are in
    return pd.read_csv(csv)


def _append(csv: Path, row: dict) -> None:
    """One row, appended under a lock: under torchrun every process of the sweep writes to the same file."""
    with open(csv, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        pd.DataFrame([row], columns=COLUMNS).to_csv(f, header=os.fstat(f.fileno()).st_size == 0, index=False)


def _run_cell(sweep, train, test, pool, done, device, sources, learners, size, seed, record) -> int:
    """One (size, seed) cell's missing rows; returns how many it recorded."""
    recorded = []

    def counted(row: dict) -> None:
        recorded.append(row)
        record(row)
    _Cell(sweep, size, seed, train, test, pool, set(done), counted, device).run(
        {"synthetic": lambda *_: (pool, None), **sources}, learners)
    return len(recorded)


def _in_parallel(jobs: int, cells: list, shared: tuple, record) -> None:
    """The cells in a pool of spawned processes (a fork would inherit torch's thread pool half-made), each with
    its share of the cores; their rows come back through a queue as they finish, so a kill keeps them."""
    ctx = torch.multiprocessing.get_context("spawn")
    rows = ctx.Queue()
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    with ctx.Pool(jobs, _start_worker, (shared, rows, threads)) as workers:
        pending = [workers.apply_async(_worker_cell, cell) for cell in cells]
        expected, received = None, 0
        while expected is None or received < expected:
            try:
                record(rows.get(timeout=0.5))
                received += 1
            except queue.Empty:
                pass
            if expected is None and all(p.ready() for p in pending):
                expected = sum(p.get() for p in pending)  # re-raises a cell's error here
            elif expected is None:
                for p in pending:
                    if p.ready() and not p.successful():
                        p.get()


_WORKER = {}  # in each spawned process: what every cell shares, and the queue its rows go back by


def _start_worker(shared: tuple, rows, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(shared=shared, rows=rows)


def _worker_cell(size: int, seed: int) -> int:
    return _run_cell(*_WORKER["shared"], size, seed, _WORKER["rows"].put)
