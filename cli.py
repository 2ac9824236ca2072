"""digitgen command line: thin. Parses options, calls the packages, prints."""

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from data.errors import InputError, refuse_existing


class OneLineErrors(TyperGroup):
    """Bad input of any kind (a usage error or an InputError) becomes one line on stderr and exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except (typer.TyperException, InputError) as e:
            message = e.format_message() if isinstance(e, typer.TyperException) else str(e)
            typer.echo(f"error: {message}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="GAN-based data augmentation for digit classifiers.")

DataDir = typer.Option(None, "--data-dir", help="Folder of the four IDX files.", show_default="$DIGITGEN_DATA_DIR, else data/mnist")
Device = typer.Option("auto", help="auto (CUDA if present), cpu or cuda.")


@app.command()
def classify(
    n_real: Optional[int] = typer.Option(None, help="Class-balanced real labelled images.", show_default="the whole training pool"),
    synthetic: Optional[Path] = typer.Option(None, help="HDF5 synthetic dataset to mix in."),
    ratio: Optional[float] = typer.Option(None, help="Synthetic images per real image.", show_default="1 with --synthetic"),
    augment: str = typer.Option("none", help="none or classical (random affine: rotation, shift, scale, shear)."),
    epochs: int = typer.Option(12, help="Passes over the training set (tiny sets get at least --min-steps updates)."),
    batch_size: int = typer.Option(128, help="Images per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate of the one-cycle schedule."),
    min_steps: int = typer.Option(600, help="Fewest optimiser steps, whatever the training set size."),
    val_size: int = typer.Option(5000, help="Fixed validation split carved from train; 0 trains on all 60,000."),
    seed: int = typer.Option(0, help="Seed for the subset, the synthetic draw, the shuffles and the weights."),
    dataset: str = typer.Option("mnist", help="mnist or fashion."),
    out: Path = typer.Option(Path("runs/classifier.pt"), help="Checkpoint to write (a .json with its sha256 goes beside it)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """Train the classifier on real (+ synthetic) digits, print its real test accuracy, save it."""
    from classifier import checkpoint, mixing
    from classifier.train import TrainConfig, evaluate, fit
    from data.files import use_all_cores
    from data import mnist

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_steps=min_steps, augment=augment, seed=seed)
    config.check()
    refuse_existing(out, overwrite)
    threads = use_all_cores()
    mix = mixing.build(mnist.load("train", dataset, data_dir), n_real, seed, synthetic, ratio, val_size)
    test = mnist.load("test", dataset, data_dir)
    typer.echo(f"training on {mix.n_real:,} real + {mix.n_synthetic:,} synthetic {dataset} images "
               f"(augment: {augment}, validation: {val_size:,}, {threads} threads)")
    model, history = fit(mix.train, config, mix.val, device=device)
    last = history[-1]
    accuracy = evaluate(model, test, next(model.parameters()).device)
    errors = round((1 - accuracy) * len(test))
    val = f", validation {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    typer.echo(f"test accuracy {accuracy:.4f} ({errors} errors in {len(test):,}){val}")
    typer.echo(f"{last['epoch']} epochs, {last['step']:,} steps in {last['seconds']:.0f} s, {last['images_per_s']:,.0f} images/s")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_config = {**asdict(config), "dataset": dataset, "n_real": mix.n_real, "n_synthetic": mix.n_synthetic,
                  "synthetic": str(synthetic) if synthetic else None, "ratio": mix.ratio, "val_size": val_size}
    metrics = {"test_accuracy": accuracy, "history": history}
    digest = checkpoint.save(out, model, run_config, metrics)
    typer.echo(f"saved {out} (sha256 {digest[:16]}...)")


@app.command()
def train(
    out: Path = typer.Option(Path("runs/gan"), help="Run folder: checkpoints, sample grids, losses.csv/png, progress.gif."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out exactly where it stopped."),
    epochs: int = typer.Option(5, help="Total epochs (when resuming: the new total)."),
    arch: str = typer.Option("dcgan", help="dcgan (fast on CPU) or tutorial (the classic Keras DCGAN)."),
    conditional: bool = typer.Option(False, help="Class-conditional generator and discriminator."),
    n_real: Optional[int] = typer.Option(None, help="Train on this class-balanced labelled subset (the one classify --n-real "
                                         "draws with the same --seed).", show_default="all 60,000 train images"),
    batch_size: Optional[int] = typer.Option(None, help="Images per step.", show_default="128, tutorial 256"),
    lr_g: Optional[float] = typer.Option(None, help="Generator learning rate.", show_default="2e-4, tutorial 1e-4"),
    lr_d: Optional[float] = typer.Option(None, help="Discriminator learning rate.", show_default="2e-4, tutorial 1e-4"),
    beta1: Optional[float] = typer.Option(None, help="Adam beta1.", show_default="0.5, tutorial 0.9"),
    beta2: Optional[float] = typer.Option(None, help="Adam beta2.", show_default="0.999"),
    nz: Optional[int] = typer.Option(None, help="Latent size.", show_default="64, tutorial 100"),
    g_width: Optional[int] = typer.Option(None, help="Generator width (channels of the last hidden layer).", show_default="64"),
    d_width: Optional[int] = typer.Option(None, help="Discriminator width (channels of the first layer).", show_default="64"),
    loss: Optional[str] = typer.Option(None, help="bce (non-saturating) or hinge.", show_default="bce"),
    ema: Optional[float] = typer.Option(None, help="Decay of the generator's weight average used for samples; 0 turns it off.",
                                        show_default="0.999"),
    sn: Optional[bool] = typer.Option(None, "--sn/--no-sn", help="Spectral normalisation in D (instead of batch norm).",
                                      show_default="no"),
    mbstd: Optional[bool] = typer.Option(None, "--mbstd/--no-mbstd", help="Minibatch standard deviation channel in D.",
                                         show_default="no"),
    deep: Optional[bool] = typer.Option(None, "--deep/--no-deep", help="dcgan: one more 3x3 convolution block in each network.",
                                        show_default="yes for dcgan"),
    r1: Optional[float] = typer.Option(None, help="R1 gradient penalty weight on real images (lazy, every 16 steps); 0 turns it "
                                       "off. Per-image only without batch norm in D: use with --sn.",
                                       show_default="0"),
    diffaug: Optional[bool] = typer.Option(None, "--diffaug/--no-diffaug", help="Differentiable augmentation (translation + "
                                           "cutout) of everything D sees.", show_default="no"),
    eval_every: Optional[float] = typer.Option(None, help="Epochs between FID measurements (metrics.csv, fid.png); 0 turns "
                                               "it off.", show_default="1, or the resumed run's"),
    seed: int = typer.Option(0, help="Seed for weights, shuffles and noise."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (with a resumable checkpoint) after this many minutes."),
    sample_every: int = typer.Option(0, help="Also save a sample grid every N steps (one per epoch always)."),
    labeller: Optional[Path] = typer.Option(None, help="Semi-supervised, with --conditional --n-real: a classify checkpoint "
                                            "that labels the rest of the training pool (use one trained on the subset alone)."),
    min_confidence: float = typer.Option(0.9, help="With --labeller: use its labels where it is at least this sure."),
    dataset: str = typer.Option("mnist", help="mnist or fashion."),
    data_dir: Optional[Path] = DataDir,
):
    """Train a DCGAN, saving a sample grid per epoch, a losses CSV and plot, a GIF, and checkpoints."""
    from augment import trainer
    from augment.models import ARCHS, GanSpec
    from data.files import use_all_cores
    from data import mnist

    if arch not in ARCHS:
        raise InputError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if max_minutes is not None and max_minutes <= 0:
        raise InputError(f"max-minutes must be > 0, got {max_minutes}")
    given = {"batch_size": batch_size, "lr_g": lr_g, "lr_d": lr_d, "beta1": beta1, "beta2": beta2, "loss": loss, "ema": ema,
             "r1": r1, "diffaug": diffaug}
    spec = GanSpec.preset(arch, nz=nz, g_width=g_width, d_width=d_width, conditional=conditional, sn=sn, mbstd=mbstd,
                          deep=deep)
    config = trainer.GanConfig(spec=spec, epochs=epochs, seed=seed, sample_every=sample_every,
                               eval_every=1.0 if eval_every is None else eval_every, dataset=dataset,
                               labeller=str(labeller) if labeller else None, min_confidence=min_confidence, n_real=n_real, **{**trainer.TRAIN_PRESETS[arch], **{k: v for k, v in given.items() if v is not None}})
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise InputError(f"nothing to resume: {out / 'checkpoint.pt'} does not exist")
        config = trainer.saved_config(out, epochs, eval_every)
    threads = use_all_cores()
    run = trainer.start(out, config, mnist.load("train", config.dataset, data_dir), resume)
    c = run.config
    images = f"{len(run.data):,} {c.dataset} images"
    if c.labeller:
        images = (f"{c.n_real:,} labelled + {len(run.data) - c.n_real:,} {c.dataset} images labelled by {c.labeller} "
                  f"at confidence >= {c.min_confidence}")
    typer.echo(f"{'resuming' if resume else 'training'} {c.spec.arch}{' conditional' if c.spec.conditional else ''} GAN "
               f"on {images}: {run.steps_per_epoch:,} steps/epoch of {c.batch_size}, "
               f"{c.epochs} epochs, from step {run.step:,} ({threads} threads) -> {out}")
    result = trainer.train(run, max_minutes)
    typer.echo(f"{result.stopped}: epoch {result.epoch}, step {result.step:,}, {result.seconds:.0f} s, "
               f"{result.images_per_s:,.0f} images/s")
    if result.stopped == "diverged":
        typer.echo(f"error: {result.message}", err=True)
        raise typer.Exit(1)
    q = result.quality
    if q:
        reached = f"{q['minutes_to_10x']:.1f} training minutes" if q["minutes_to_10x"] is not None else "not yet"
        typer.echo(f"best FID {q['best_fid']:.2f} at step {q['best_step']:,} ({q['best_minutes']:.1f} min; real floor "
                   f"{q['floor']:.2f}); 10x the floor reached: {reached}")
    typer.echo(f"wrote {out}/generator.pt, checkpoint.pt, samples/, losses.csv, losses.png, progress.gif"
               + (", metrics.csv, fid.png" if q else ""))
    if result.stopped != "finished":
        typer.echo(f"continue with: digitgen train --out {out} --resume --epochs {c.epochs}")


@app.command()
def generate(
    generator: Optional[Path] = typer.Option(None, help="A generator.pt written by train.", show_default="the bundled one"),
    labeller: Path = typer.Option(Path("runs/classifier.pt"), help="A classifier checkpoint written by classify."),
    n: int = typer.Option(10000, help="Images to write."),
    out: Path = typer.Option(Path("data/synthetic/synthetic.h5"), help="HDF5 file to write."),
    min_confidence: float = typer.Option(0.9, help="Keep only images the labeller is at least this sure of."),
    min_realism: float = typer.Option(0.0, help="Keep only images with at least this realism score (k-NN, reference "
                                      "features; 1 = on the real manifold's edge); 0 turns it off."),
    agree: Optional[Path] = typer.Option(None, help="A second classifier checkpoint: keep only images it labels the same way."),
    balance: bool = typer.Option(False, help="Equal counts per class (gives up, with a message, if a class is too rare)."),
    digit: Optional[int] = typer.Option(None, help="Conditional generators: draw only this digit."),
    save_latents: bool = typer.Option(False, help="Also store the noise that drew each image."),
    seed: int = typer.Option(0, help="Same seed, same images, labels and order."),
    batch_size: int = typer.Option(1000, help="Images drawn per batch."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    data_dir: Optional[Path] = DataDir,
):
    """Draw digits, pseudo-label them, keep the confident (realistic, agreed) ones, write an HDF5 synthetic dataset."""
    from augment.checkpoint import BUNDLED
    from augment.pipeline import GenerateConfig, generate as run_generate
    from data.files import use_all_cores

    config = GenerateConfig(n=n, min_confidence=min_confidence, min_realism=min_realism, balance=balance, seed=seed,
                            batch_size=batch_size, save_latents=save_latents, digit=digit)
    use_all_cores()
    out.parent.mkdir(parents=True, exist_ok=True)
    report = run_generate(generator or BUNDLED, labeller, out, config, overwrite, agree_path=agree, data_dir=data_dir)
    typer.echo(f"wrote {out}: {report.kept:,} images, {report.kept / report.seconds:,.0f} images/s written")
    tests = [f"confidence >= {min_confidence}"] + [f"realism >= {min_realism}"] * bool(min_realism) + [f"agreement with {agree}"] * bool(agree)
    typer.echo(f"kept {report.kept:,} of {report.drawn:,} drawn ({report.kept / report.drawn:.1%}) at {', '.join(tests)}")
    if len(report.failed) > 1:
        typer.echo("drawn images failing each test: " + ", ".join(f"{k} {v:,}" for k, v in report.failed.items()))
    if report.agreement is not None:
        typer.echo(f"the labeller agrees with the requested class on {report.agreement:.1%} of all drawn images")
    typer.echo("class histogram: " + "  ".join(f"{c}: {k:,}" for c, k in enumerate(report.class_counts)))


@app.command()
def interpolate(
    generator: Optional[Path] = typer.Option(None, help="A generator.pt written by train.", show_default="the bundled one"),
    out: Path = typer.Option(Path("runs/interpolation.png"), help=".png for a grid, .gif for an animation."),
    rows: int = typer.Option(8, help="Interpolations (grid rows, or latents visited in turn by the GIF)."),
    steps: int = typer.Option(10, help="Images per interpolation."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds of the latents to visit, in order.", show_default="random"),
    digit: Optional[int] = typer.Option(None, help="Conditional generators: interpolate this digit.", show_default="row i draws i % 10"),
    digit_grid: bool = typer.Option(False, help="Conditional generators: a digit-by-style grid (rows styles, columns 0-9)."),
    seed: int = typer.Option(0, help="Seed of the random latents."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Walk the latent space: spherical interpolations as a grid or GIF, or a digit-by-style grid."""
    import torch

    from augment import explore
    from augment.checkpoint import BUNDLED, load_generator
    from augment.images import grid_image, save_gif, save_grid

    if out.suffix not in (".png", ".gif"):
        raise InputError(f"{out}: choose a .png or .gif output")
    refuse_existing(out, overwrite)
    if rows < 1 or steps < 2:
        raise InputError("need --rows >= 1 and --steps >= 2")
    try:
        visit = [int(s) for s in seeds.split(",")] if seeds else list(range(seed * 1000, seed * 1000 + rows + 1))
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if len(visit) < 2:
        raise InputError("--seeds needs at least two seeds")
    g, _ = load_generator(generator or BUNDLED)
    if (digit_grid or digit is not None) and not g.spec.conditional:
        raise InputError("--digit and --digit-grid need a conditional generator (train --conditional)")
    z = explore.latents(g.spec.nz, visit)
    out.parent.mkdir(parents=True, exist_ok=True)
    if digit_grid:
        save_grid(explore.digit_by_style(g, z[:rows]), out if out.suffix == ".png" else out.with_suffix(".png"))
        typer.echo(f"wrote {out.with_suffix('.png')}: {min(rows, len(z))} styles x digits 0-9")
        return
    pairs = len(visit) - 1
    digits = None
    if g.spec.conditional:
        digits = torch.full((pairs,), digit) if digit is not None else torch.arange(pairs) % 10
    images = explore.interpolation(g, z[:-1], z[1:], steps, digits)
    if out.suffix == ".png":
        save_grid(images, out, nrow=steps)
        typer.echo(f"wrote {out}: {pairs} interpolations x {steps} steps")
    else:
        walk = [i for i in range(len(images)) if i == 0 or i % steps]  # each segment starts where the last ended
        save_gif([grid_image(images[i:i + 1], 1, scale=6) for i in walk], out, ms_per_frame=80)
        typer.echo(f"wrote {out}: {len(walk)} frames through {len(visit)} latents")


@app.command()
def show(
    file: Path = typer.Argument(..., help="An HDF5 synthetic dataset."),
    out: Optional[Path] = typer.Option(None, help="PNG to write.", show_default="FILE with .png"),
    per_class: int = typer.Option(16, help="Images per row."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Draw a PNG grid of a synthetic dataset: a row per pseudo-label, images in file (drawing) order."""
    from augment.images import labelled_rows
    from data.synthetic import load_synthetic

    out = out or file.with_suffix(".png")
    refuse_existing(out, overwrite)
    if per_class < 1:
        raise InputError(f"per-class must be >= 1, got {per_class}")
    data = load_synthetic(file)
    rows, names = [], []
    for c in range(10):
        idx = (data.labels == c).nonzero().squeeze(1)[:per_class]
        rows.append(data.images[idx])
        names.append(f"{c}" if len(idx) else f"{c} -")
    labelled_rows(rows, names, per_class).save(out)
    typer.echo(f"wrote {out}: up to {per_class} images per class from {len(data):,}")


@app.command()
def evaluate(
    source: Path = typer.Argument(..., help="A generator.pt written by train, or an HDF5 synthetic dataset."),
    n: int = typer.Option(10000, help="Samples to draw (generator) or read (HDF5, its first rows)."),
    labeller: Optional[Path] = typer.Option(None, help="Unconditional generators: the classifier that labels samples "
                                            "for CAS.", show_default="the reference classifier"),
    cas: bool = typer.Option(True, help="Also train a classifier on the samples alone (CAS) and on the floor subset."),
    seed: int = typer.Option(0, help="Seed of the samples and of the real floor subset."),
    out: Optional[Path] = typer.Option(None, help="Also write the figures as JSON here."),
    data_dir: Optional[Path] = DataDir,
):
    """FID, KID, precision/recall, label entropy and CAS of a generator or dataset, beside the real floor."""
    from augment import quality
    from augment.checkpoint import load_generator
    from augment.pipeline import draw
    from classifier import checkpoint as classifier_checkpoint
    from classifier.train import TrainConfig, predict_proba
    from data.files import use_all_cores
    from classifier.train import evaluate as evaluate_classifier
    from data import mnist
    from data.synthetic import load_synthetic

    if n < 2:
        raise InputError(f"n must be >= 2, got {n}")
    use_all_cores()
    reference, judge = classifier_checkpoint.load_reference(), classifier_checkpoint.load_judge()
    if source.suffix in (".h5", ".hdf5"):
        data = load_synthetic(source, limit=n)
        images, labels, dataset, how = data.images, data.labels, data.attrs["dataset"], "its pseudo-labels"
    else:
        g, payload = load_generator(source)
        images, labels = draw(g, n, seed)
        dataset, how = payload["info"]["run"]["dataset"], "the classes asked for"
        if labels is None:
            labeller_model = classifier_checkpoint.load(labeller)[0] if labeller else reference
            labels = predict_proba(labeller_model, images).argmax(1)
            how = f"labels from {labeller or 'the reference classifier'}"
    test, train = mnist.load("test", dataset, data_dir), mnist.load("train", dataset, data_dir)
    floor_set = train.subset(mnist.labelled_subset(train.labels, len(images), seed))
    cas_config = TrainConfig(seed=seed) if cas else None
    typer.echo(f"{source}: {len(images):,} samples vs the {len(test):,} real test images; CAS trains on {how}")
    found = quality.measure(images, labels, test, reference, cas_config, judge=judge)
    floor = quality.measure(floor_set.images, floor_set.labels, test, reference, cas_config)
    floor = replace(floor, label_noise=1 - evaluate_classifier(judge, test))  # the judge's own error rate
    rows = [("FID", "fid", ".2f"), ("KID", "kid", ".3f"), ("precision", "precision", ".3f"),
            ("recall", "recall", ".3f"), ("label entropy (bits)", "label_entropy_bits", ".3f"), ("CAS", "cas", ".4f"),
            ("label noise (judge)", "label_noise", ".2%")]
    typer.echo(f"{'':22}{'samples':>10}{'real floor':>12}")
    for name, key, fmt in rows:
        a, b = getattr(found, key), getattr(floor, key)
        typer.echo(f"{name:22}{'-' if a is None else format(a, fmt):>10}{'-' if b is None else format(b, fmt):>12}")
    typer.echo("predicted labels: " + "  ".join(f"{c}: {s:.1%}" for c, s in enumerate(found.label_shares)))
    typer.echo(f"(floor: {len(floor_set):,} real train images, class-balanced, seed {seed}, under the same features; label "
               f"noise: the share of labels the judge classifier disagrees with, beside its own error on real test)")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"source": str(source), "samples": found.as_dict(), "floor": floor.as_dict()}, indent=2) + "\n")
        typer.echo(f"wrote {out}")


def _numbers(text: str, kind, name: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _describe_gan(attrs: dict) -> str:
    """How the pool's generator was trained, from the generator.json beside it (when still there)."""
    head = f"generator sha256 {attrs['generator_sha256'][:16]}..."
    sidecar = Path(attrs["config"].get("generator", "unknown")).with_suffix(".json")
    if not sidecar.is_file():
        return f"{head} (no {sidecar} here: how it was trained is not known)"
    info = json.loads(sidecar.read_text())
    run, spec = info["run"], info["spec"]
    images = f"{run['n_real']:,} labelled" if run["n_real"] else "all 60,000"
    labels = "with their labels (conditional)" if spec["conditional"] else "without labels"
    return f"{head}: {spec['arch']} GAN trained {info['step']:,} steps on {images} {run['dataset']} train images {labels}"


@app.command()
def benchmark(
    synthetic: Path = typer.Option(..., help="HDF5 pool of GAN samples (generate --min-confidence 0: every image "
                                   "is relabelled here, its labels are ignored)."),
    sizes: Optional[str] = typer.Option(None, help="Real labelled sizes.", show_default="100,1000,10000,60000"),
    ratios: Optional[str] = typer.Option(None, help="Synthetic:real ratios.", show_default="0.5,1,2,4"),
    seeds: Optional[int] = typer.Option(None, help="Seeds per row (0, 1, ...).", show_default="3"),
    relabel_rounds: int = typer.Option(0, help="Also a self-training row: relabel with the last classifier and retrain, K times."),
    min_confidence: float = typer.Option(0.9, help="Mix in only images the labeller is at least this sure of."),
    min_steps: int = typer.Option(600, help="Fewest optimiser steps per classifier (the budget is 12 epochs of the real subset, at least this)."),
    quick: bool = typer.Option(False, help="A reduced sweep: sizes 100 and 1,000, ratio 1, 2 seeds, 300-step budget."),
    out: Path = typer.Option(Path("runs/benchmark"), help="Folder for rows.csv, summary.csv, report.md, accuracy.png."),
    overwrite: bool = typer.Option(False, help="Start afresh, discarding the rows already in --out."),
    data_dir: Optional[Path] = DataDir,
):
    """Sweep real sizes x augmentations x seeds, test every classifier on real test, report and plot."""

    from classifier import benchmark as bench
    from classifier import report
    from data.files import use_all_cores
    from data import mnist
    from data.synthetic import load_synthetic

    given = {"sizes": sizes and _numbers(sizes, int, "sizes"), "ratios": ratios and _numbers(ratios, float, "ratios"),
             "seeds": seeds and tuple(range(seeds))}
    if quick and (any(given.values()) or min_steps != 600):
        raise InputError("--quick fixes sizes, ratios, seeds and min-steps: drop them or drop --quick")
    if not quick:
        given["min_steps"] = min_steps
    sweep = replace(bench.QUICK if quick else bench.Sweep(), relabel_rounds=relabel_rounds, min_confidence=min_confidence,
                    **{k: v for k, v in given.items() if v})
    pool = load_synthetic(synthetic, limit=1)
    dataset = pool.attrs["dataset"]
    if overwrite:
        for name in ("rows.csv", "sweep.json"):
            (out / name).unlink(missing_ok=True)
    threads = use_all_cores()
    train, test = mnist.load("train", dataset, data_dir), mnist.load("test", dataset, data_dir)
    typer.echo(f"benchmark -> {out} ({threads} threads): sizes {list(sweep.sizes)}, ratios {list(sweep.ratios)}, "
               f"seeds {list(sweep.seeds)}; rows already in {out / 'rows.csv'} are kept")

    def show(row: dict) -> None:
        typer.echo(f"  {row['size']:>6,} real  {row['variant']:<20} ratio {row['ratio']:<4g} seed {row['seed']}: "
                   f"{row['accuracy']:.4f}  ({row['steps']:,} steps, {row['seconds']:.0f} s)")

    start = time.perf_counter()
    rows = bench.run(sweep, synthetic, train, test, out, dataset, on_row=show)
    table = report.summarise(rows)
    header = "\n".join([
        f"# Augmentation benchmark ({dataset})", "",
        f"- Synthetic pool: `{synthetic}`, {_describe_gan(pool.attrs)}. " + (
            "Generated with --min-confidence 0: no other labeller selected it." if not pool.attrs["min_confidence"] else
            f"Caution: generated with --min-confidence {pool.attrs['min_confidence']}, so labeller sha256 "
            f"{pool.attrs['labeller_sha256'][:16]}... pre-selected it; generate with --min-confidence 0 for a clean comparison."),
        f"- Labeller: for each real size and seed, the `classical` row's classifier, trained on that labelled subset "
        f"alone, labels every synthetic and unlabelled real image; only those at confidence >= {sweep.min_confidence} are mixed in.",
        f"- Budget: every classifier of a size takes the same number of steps of batch 128: {sweep.epochs} epochs of "
        f"the real subset, at least {sweep.min_steps}, whatever is mixed in. Tested on the {len(test):,} real test images.",
        "- Gain: paired by seed (a seed draws the same labelled subset in every row), t interval over the seeds of the last column.",
    ])
    table.to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(report.markdown(table, header))
    report.plot(table, out / "accuracy.png")
    typer.echo(report.markdown(table, header))
    typer.echo(f"{len(rows)} rows, {time.perf_counter() - start:.0f} s this run; wrote {out}/rows.csv, summary.csv, report.md, accuracy.png")


@app.command()
def info(file: Path = typer.Argument(..., help="An HDF5 synthetic dataset.")):
    """Print a synthetic dataset's attributes, columns and class histogram."""
    from data.synthetic import CONFIDENCE_EDGES, summary

    s = summary(file)
    typer.echo(f"{file}: {s['rows']:,} images")
    for key, value in s["attrs"].items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        typer.echo(f"  {key}: {shown}")
    for name, (dtype, shape) in s["columns"].items():
        typer.echo(f"  /{name}: {dtype} {shape}")
    if s["rows"]:
        low, median, high = s["confidence_quantiles"]
        typer.echo(f"confidence: min {low:.3f}, median {median:.3f}, max {high:.3f}")
        typer.echo("confidence histogram:")
        for low, high, count in zip(CONFIDENCE_EDGES, CONFIDENCE_EDGES[1:], s["confidence_counts"]):
            span = f"[{low:g}, {high:g}{']' if high == 1 else ')'}"
            typer.echo(f"  {span:<14}{count:>8,}  {_bar(count, s['rows'])}")
    typer.echo("class histogram:")
    for digit, count in enumerate(s["class_counts"]):
        typer.echo(f"  {digit}: {count:>8,}  {_bar(count, max(s['class_counts']))}")


def _bar(count: int, top: int) -> str:
    return "#" * round(40 * count / (top or 1))


if __name__ == "__main__":
    app()
