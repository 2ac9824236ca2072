"""One function per command of the generator side, each returning its result: what `digitgen` prints and a
notebook calls. `log` receives the lines a user should see before long work (default: print)."""

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from augment import trainer
from augment.checkpoint import BUNDLED, BUNDLED_CONDITIONAL, load_generator
from augment.pipeline import GenerateConfig, Report, draw
from augment.pipeline import generate as run_pipeline
from augment.quality import Quality, measure
from augment.ssgan import BATCH, check_steps
from augment.variants import Conditional, Discriminator, Filtered
from classifier import benchmark as sweeps
from classifier import checkpoint as classifier_checkpoint
from classifier import report
from classifier.commands import Classified, evaluate_and_save
from classifier.mixing import self_train
from classifier.train import TrainConfig, evaluate as accuracy, predict_proba
from data import distributed, mnist
from data.errors import InputError, check_folder_of, prepare_output
from data.files import check_seed, lock_folder, resolve_device, sha256_of, use_all_cores, write_atomic
from data.synthetic import load_synthetic

SAMPLES = 10_000  # evaluate's samples unless told: as many as real test images, where FID's small-sample bias is small
MIN_SAMPLES = 10  # precision and recall need k = 3 neighbours of each sample, and some to spare
MAX_ROUNDS = 10  # of self-training after the semi-supervised GAN: each costs minutes
SELF_TRAINING_CONFIDENCE = 0.9  # the benchmark labellers' (at 100 labels, 99% of the labels it kept were right)


def train(out: str | Path = "runs/gan", resume: bool = False, epochs: int | None = None,
          max_minutes: float | None = None, device: str = "auto", data_dir: str | Path | None = None,
          progress: bool = True, log=print, **options) -> trainer.Outcome:
    """Train a GAN in `out` (sample grids, losses, FID curve, checkpoints), or resume the run saved there.
    options: those of `digitgen train` (arch, conditional, n_real, lr_g, sn, eval_every, seed, ...);
    a resumed run refuses any that differ from its saved settings."""
    out = Path(out)
    if max_minutes is not None and not max_minutes > 0:
        raise InputError(f"max-minutes must be > 0, got {max_minutes}")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise InputError(f"nothing to resume: {out / 'checkpoint.pt'} does not exist")
        config = trainer.resumed_config(out, epochs, options.pop("eval_every", None), **options)
    else:
        config = trainer.make_config(**options, **({"epochs": epochs} if epochs is not None else {}))
    threads = use_all_cores()
    run = trainer.start(out, config, mnist.load("train", config.dataset, data_dir), resume, device)
    c = run.config
    log = log if run.main else (lambda *_: None)
    images = f"{len(run.data):,} {c.dataset} images"
    if c.labeller:
        images = (f"{c.n_real:,} labelled + {len(run.data) - c.n_real:,} {c.dataset} images labelled by {c.labeller} "
                  f"at confidence >= {c.min_confidence}")
    if c.relabel_every:
        images += f", relabelled every {c.relabel_every} epoch{'s' * (c.relabel_every > 1)} by the classifier it improves"
    kind = " conditional" if c.spec.conditional else f" self-conditioned ({c.spec.clusters} clusters)" if c.spec.clusters else ""
    log(f"{'resuming' if resume else 'training'} {c.spec.arch}{kind} GAN on "
        f"{images}: {run.steps_per_epoch:,} steps/epoch of {c.batch_size}"
        f"{f' x {run.world} processes' if run.world > 1 else ''}, {c.epochs} epochs, from step {run.step:,} "
        f"({threads} threads, {run.dev}) -> {out}")
    return trainer.train(run, max_minutes, progress)


def generate(generator: str | Path | None = None, labeller: str | Path | None = None,
             out: str | Path = "data/synthetic/synthetic.h5", n: int = 10000, min_confidence: float = 0.9,
             min_realism: float = 0.0, agree: str | Path | None = None, balance: bool = False, digit: int | None = None,
             save_latents: bool = False, seed: int = 0, batch_size: int = 1000, overwrite: bool = False,
             data_dir: str | Path | None = None, device: str = "auto", progress: bool = True, merge: str = "vds") -> Report:
    """Draw digits (default: the bundled generator; the bundled conditional one for --balance or --digit, which asks
    for classes instead of rejecting draws), label them (default: the pinned reference classifier), keep those
    passing the filters, and write an HDF5 synthetic dataset (under torchrun: one shard per process, joined by
    `merge`, vds or copy, into the file one process writes)."""
    config = GenerateConfig(n=n, min_confidence=min_confidence, min_realism=min_realism, balance=balance, seed=seed,
                            batch_size=batch_size, save_latents=save_latents, digit=digit)
    config.check()
    out = Path(out)
    prepare_output(out, overwrite)
    use_all_cores()
    generator = generator or (BUNDLED_CONDITIONAL if balance or digit is not None else BUNDLED)
    return run_pipeline(Path(generator), Path(labeller or classifier_checkpoint.REFERENCE), out, config,
                        overwrite, progress, Path(agree) if agree else None, data_dir, device, merge)


def semi_supervised(n_real: int = 100, steps: int = 3000, rounds: int = 1, round_epochs: int = 12,
                    generator: str | Path | None = None, seed: int = 0, val_size: int = mnist.VAL_SIZE,
                    out: str | Path = "runs/semi-supervised.pt", overwrite: bool = False,
                    data_dir: str | Path | None = None, device: str = "auto", progress: bool = True,
                    log=print) -> Classified:
    """A classifier trained as the discriminator of a semi-supervised GAN: the recipe of the benchmark's
    gan-discriminator row, on n_real labelled train images and the rest of the training pool without labels
    (unlike the benchmark, validation is held out, to measure), its generator starting from `generator` (default:
    the bundled one); then `rounds` of self-training from it (a DigitCNN with classical augmentation learns the
    labelled images plus every unlabelled one the last model labels at SELF_TRAINING_CONFIDENCE, `round_epochs`
    epochs over them). Tested on real test and saved as `classify` saves, so that it can label `generate`'s
    samples or a semi-supervised conditional GAN's pool (`train --labeller`)."""
    out, source = Path(out), Path(generator or BUNDLED)
    check_steps(steps, "steps")
    check_seed(seed)
    if not 0 <= rounds <= MAX_ROUNDS:
        raise InputError(f"rounds must be in 0..{MAX_ROUNDS}, got {rounds}")
    if not 1 <= round_epochs <= 1000:
        raise InputError(f"round-epochs must be in 1..1,000, got {round_epochs}")
    student = TrainConfig(epochs=round_epochs, augment="classical", seed=seed)
    student.check()
    resolve_device(device)
    release = classifier_checkpoint.claim(out, overwrite)  # first: it refuses an --out that names no file
    try:
        inputs = {p.resolve() for p in (source, source.with_suffix(".json"))}
        if inputs & {p.resolve() for p in (out, out.with_suffix(".json"))}:
            raise InputError(f"--out {out} would replace the generator {source} or its sidecar")
        learner = Discriminator(steps, device, source, progress)
        train_set, test = mnist.load("train", learner.dataset, data_dir), mnist.load("test", learner.dataset, data_dir)
        pool, val = mnist.validation_split(train_set.labels, val_size)
        if not 1 <= n_real < len(pool):
            raise InputError(f"n-real must be in 1..{len(pool) - 1:,} (the rest of the training pool is learnt "
                             f"without labels), got {n_real}")
        labelled = mnist.labelled_subset(train_set.labels, n_real, seed, val_size)
        unlabelled = mnist.unlabelled_pool(train_set.labels, labelled, val_size)
        threads = use_all_cores()
        named = "the bundled generator" if generator is None else str(generator)
        log(f"training a semi-supervised GAN's discriminator on {n_real:,} labelled + {len(unlabelled):,} "
            f"unlabelled {learner.dataset} images, its generator starting from {named}: {steps:,} steps of {BATCH} + "
            f"{BATCH} + {BATCH} (validation: {len(val):,}, {threads} threads)")
        real, val_set = train_set.subset(labelled), (train_set.subset(val) if len(val) else None)
        start = time.perf_counter()
        model, _, _ = learner(n_real, seed, real, train_set.images[unlabelled])
        seconds = time.perf_counter() - start
        history = [{"step": steps, "seconds": round(seconds, 1),
                    "images_per_s": round(3 * BATCH * steps / seconds)}]
        if val_set is not None:
            history[0]["val_accuracy"] = accuracy(model, val_set)
        log(f"discriminator: {steps:,} steps in {seconds:.0f} s{_validation(history[-1])}")

        def said(row: dict) -> None:
            history.append(row)
            log(f"self-training round {row['round']}: {row['n_unlabelled']:,} unlabelled images labelled at "
                f">= {SELF_TRAINING_CONFIDENCE}, {row['step']:,} steps in {row['seconds']:.0f} s{_validation(row)}")
        model, _ = self_train(model, real, train_set.images[unlabelled], rounds, student, SELF_TRAINING_CONFIDENCE,
                              val=val_set, device=device, on_round=said)
        method = "semi-supervised GAN discriminator" + (", then self-training" if rounds else "")
        run_config = {"method": method, **learner.settings(), "seed": seed,
                      "dataset": learner.dataset, "n_real": n_real, "n_synthetic": 0,
                      "n_unlabelled": len(unlabelled), "val_size": val_size, "rounds": rounds}
        if rounds:
            run_config.update(round_epochs=round_epochs, min_confidence=SELF_TRAINING_CONFIDENCE)
        return evaluate_and_save(model, test, out, run_config, history, n_real, 0, threads)
    finally:
        release()


def _validation(row: dict) -> str:
    return f", validation {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""


@dataclass(frozen=True)
class Evaluation:
    source: Path
    labels_from: str  # what CAS trains on: the file's pseudo-labels, the classes asked for, or a labeller's
    samples: Quality
    floor: Quality  # a class-balanced real train subset of the same size, under the same features
    floor_seed: int

    def as_dict(self) -> dict:
        return {"source": str(self.source), "samples": self.samples.as_dict(), "floor": self.floor.as_dict()}


def evaluate(source: str | Path | None = None, n: int | None = None, labeller: str | Path | None = None, cas: bool = True,
             seed: int = 0, out: str | Path | None = None, overwrite: bool = False, data_dir: str | Path | None = None,
             device: str = "auto", progress: bool = True, log=print) -> Evaluation:
    """FID, KID, precision/recall, label entropy, CAS and label noise of a generator (default: the bundled one)
    or an HDF5 dataset, beside the same figures for real images. n: samples drawn, or a file's first rows
    (default 10,000, or the whole file if it is smaller)."""
    source = Path(source or BUNDLED)
    if n is not None and not MIN_SAMPLES <= n <= 55_000:
        raise InputError(f"n must be in {MIN_SAMPLES}..55,000 (precision and recall need neighbours; the floor is as "
                         f"many real train images outside validation), got {n}")
    check_seed(seed)
    hdf5 = source.suffix in (".h5", ".hdf5")
    if hdf5 and labeller:
        raise InputError(f"--labeller labels a generator's samples; {source} carries its own labels")
    if out is not None:
        if Path(out).suffix != ".json":
            raise InputError(f"--out {out}: the figures are JSON, name it .json")
        prepare_output(Path(out), overwrite)
        inputs = {p.resolve().with_suffix(".json") for p in (source, Path(labeller or source))}  # their sidecars
        if Path(out).resolve() in inputs:
            raise InputError(f"--out {out} is the sha256 sidecar of an input: the report would replace it")
    model = classifier_checkpoint.load(labeller)[0] if labeller else None  # refused before any work if unusable
    if labeller and sha256_of(labeller) == classifier_checkpoint.JUDGE_SHA256:
        raise InputError(f"{labeller} is the judge, which estimates the label noise: label with another classifier")
    dev = resolve_device(device)
    use_all_cores()
    reference = classifier_checkpoint.load_reference().to(dev)
    judge = classifier_checkpoint.load_judge().to(dev)
    if hdf5:
        data = load_synthetic(source, limit=n or SAMPLES)
        rows = len(data.labels)
        if rows < MIN_SAMPLES:
            raise InputError(f"{source} holds {rows} images; evaluate needs at least {MIN_SAMPLES} (precision and "
                             f"recall need neighbours)")
        if n is not None and rows < n:  # quietly fewer samples would bias FID upwards, out of line with --n
            raise InputError(f"{source} holds {rows:,} images; --n {n:,} asks for more: pass --n {rows} or fewer")
        images, labels, dataset, how = data.images, data.labels, data.attrs["dataset"], "its pseudo-labels"
    else:
        g, payload = load_generator(source)
        images, labels = draw(g.to(dev), n or SAMPLES, seed)
        dataset, how = payload["info"]["run"]["dataset"], "the classes asked for"
        if labels is None or labeller:
            labels = predict_proba(reference if model is None else model.to(dev), images).argmax(1)
            how = f"labels from {labeller or 'the reference classifier'}"
    test, train_set = mnist.load("test", dataset, data_dir), mnist.load("train", dataset, data_dir)
    floor_set = train_set.subset(mnist.labelled_subset(train_set.labels, len(images), seed))
    cas_config = TrainConfig(seed=seed) if cas else None
    log(f"{source}: {len(images):,} samples vs the {len(test):,} real test images; CAS trains on {how}")
    found = measure(images, labels, test, reference, cas_config, progress, judge, device)
    floor = measure(floor_set.images, floor_set.labels, test, reference, cas_config, progress, device=device)
    floor = replace(floor, label_noise=1 - accuracy(judge, test))  # the judge's own error rate
    result = Evaluation(source, how, found, floor, seed)
    if out is not None:
        write_atomic(Path(out), lambda tmp: tmp.write_text(json.dumps(result.as_dict(), indent=2) + "\n"))
    return result


@dataclass(frozen=True)
class Benchmark:
    folder: Path
    rows: pd.DataFrame  # one line per classifier trained (size, variant, ratio, seed, accuracy, ...)
    table: pd.DataFrame  # mean +- std and paired gains per (size, variant, ratio)
    markdown: str
    main: bool = True  # False in torchrun's other processes: process 0 writes the report and prints it


def benchmark(synthetic: str | Path | None = None, out: str | Path = "runs/benchmark", sizes=None, ratios=None,
              seeds: int | None = None, relabel_rounds: int = 0, min_confidence: float = 0.9,
              min_steps: int | None = None, quick: bool = False, gan_minutes: float = 0.0, gan_relabel_every: int = 0,
              min_realism: float = 0.0, discriminator_steps: int = 0, jobs: int = 1, overwrite: bool = False,
              data_dir: str | Path | None = None, device: str = "auto", on_row=lambda row: None, log=print) -> Benchmark:
    """Sweep real sizes x augmentations x seeds, each classifier tested on real test; rows already in `out` are
    kept. Without a pool, one is drawn from the bundled generator into `out`/pool.h5 (and reused).
    gan_minutes > 0 adds the `conditional` variant (a semi-supervised conditional GAN per size and seed, trained
    that long, relabelled every gan_relabel_every epochs if that is not 0); min_realism > 0 the `filtered` one
    (the pool's samples on the real manifold); discriminator_steps > 0 the `gan-discriminator` one (a
    semi-supervised GAN's discriminator as the classifier, trained that many steps) and its control, each teaching
    self-training too if relabel_rounds > 0."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: --out names the benchmark's folder")
    check_folder_of(out)
    if not 1 <= jobs <= 64:
        raise InputError(f"jobs must be in 1..64, got {jobs}")
    if seeds is not None and not 1 <= seeds <= 100:
        raise InputError(f"need 1..100 seeds, got {seeds}")
    given = {"sizes": sizes, "ratios": ratios, "seeds": None if seeds is None else tuple(range(seeds)),
             "min_steps": min_steps}
    if quick and any(v is not None for v in given.values()):
        raise InputError("--quick fixes sizes, ratios, seeds and min-steps: drop them or drop --quick")
    base = sweeps.QUICK if quick else sweeps.Sweep()
    sweep = replace(base, relabel_rounds=relabel_rounds, min_confidence=min_confidence,
                    **{k: tuple(v) if k != "min_steps" else v for k, v in given.items() if v is not None})
    dataset = "mnist" if synthetic is None else load_synthetic(synthetic, limit=1).attrs["dataset"]
    train_set, test = mnist.load("train", dataset, data_dir), mnist.load("test", dataset, data_dir)
    sweep.check(len(train_set))
    if not 0 <= gan_minutes <= 10_000:
        raise InputError(f"gan-minutes must be in 0..10,000 (0 leaves the variant out), got {gan_minutes}")
    if not 0 <= min_realism <= 100:
        raise InputError(f"min-realism must be in 0..100 (0 leaves the variant out), got {min_realism}")
    if not 0 <= gan_relabel_every <= 100_000:
        raise InputError(f"gan-relabel-every must be in 0..100,000 epochs, got {gan_relabel_every}")
    if discriminator_steps:
        check_steps(discriminator_steps, "discriminator-steps", " (0 leaves the variant out)")
    if discriminator_steps and dataset != "mnist":
        raise InputError(f"the gan-discriminator variant starts from the bundled MNIST generator; this pool is of {dataset}")
    if gan_relabel_every and not gan_minutes:
        raise InputError("--gan-relabel-every relabels the conditional variant's GANs: it needs --gan-minutes")
    distributed.join(resolve_device(device))  # under torchrun: each process takes its share of the cells
    main = distributed.rank() == 0
    log, on_row = (log, on_row) if main else (lambda *_: None, lambda row: None)
    if synthetic is None:
        synthetic = out / "pool.h5"
        if not synthetic.exists() and main:
            need = max(10_000, 2 * round(max(sweep.ratios) * max(sweep.sizes)))
            log(f"drawing a pool of {need:,} digits from the bundled generator into {synthetic} (kept for reruns)")
            out.mkdir(parents=True, exist_ok=True)
            with distributed.alone():
                generate(out=synthetic, n=need, min_confidence=0.0, device=device, progress=False)
        distributed.barrier()
    pool = load_synthetic(synthetic, limit=1)
    threads = use_all_cores()
    log(f"benchmark -> {out} ({threads} threads): sizes {list(sweep.sizes)}, ratios {list(sweep.ratios)}, "
        f"seeds {list(sweep.seeds)}" + ("" if overwrite else f"; rows already in {out / 'rows.csv'} are kept"))
    sources = {}
    if gan_minutes:
        sources["conditional"] = Conditional(out, train_set, dataset, gan_minutes, max(sweep.ratios), sweep.val_size,
                                             device, log, gan_relabel_every)
    if min_realism:
        sources["filtered"] = Filtered(load_synthetic(synthetic).images, train_set, min_realism)
    learners = {"gan-discriminator": Discriminator(discriminator_steps, device),
                "classical-matched": sweeps.Matched(sweep, discriminator_steps, device)} if discriminator_steps else {}
    settings = {name: variant.settings() for name, variant in {**sources, **learners}.items()}
    if "conditional" in sources:  # before --overwrite discards any row
        sources["conditional"].check_cache(sweep.sizes, sweep.seeds)
    out.mkdir(parents=True, exist_ok=True)
    lock, problem = None, None
    if main:  # a second sweep appending to the same rows.csv would count seeds twice
        try:
            lock = lock_folder(out)
        except InputError as e:
            problem = str(e)
    problem = distributed.agreed(problem)
    if problem:
        raise InputError(problem)
    try:
        rows = sweeps.run(sweep, Path(synthetic), train_set, test, out, dataset, on_row, overwrite, device, sources,
                          settings, jobs, learners)
        table = report.summarise(rows)
        every = json.loads((out / "sweep.json").read_text()).get("sources")  # with variants an earlier run added
        text = report.markdown(table, report.header(sweep, Path(synthetic), pool.attrs, dataset, len(test), every,
                                                         frozenset(table.variant)))
        if main:
            write_atomic(out / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
            write_atomic(out / "report.md", lambda tmp: tmp.write_text(text))
            write_atomic(out / "accuracy.png", lambda tmp: report.plot(table, tmp))
    finally:
        if lock is not None:
            os.close(lock)
        distributed.leave()
    return Benchmark(out, rows, table, text, main)
