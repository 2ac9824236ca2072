"""digitgen command line: thin. Parses options, calls the packages, prints."""

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from data.errors import Diverged, InputError


# Where an output cannot be written (read-only, a file in the way, a full disk): the user's to fix, not a bug.
OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EISDIR,
                 errno.ENOTDIR, errno.EEXIST}


class OneLineErrors(TyperGroup):
    """Bad input of any kind (a usage error or an InputError) becomes one line on stderr and exit code 2; a training
    that diverged, one line and exit code 1."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        _received.clear()
        for s in (signal.SIGINT, signal.SIGTERM):  # kill and timeout clean up as Ctrl-C does (train saves first)
            signal.signal(s, _as_interrupt)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except (typer.TyperException, InputError) as e:
            message = e.format_message() if isinstance(e, typer.TyperException) else str(e)
            _say(f"error: {message}")
            sys.exit(2)
        except Diverged as e:
            _say(f"error: {e}")
            sys.exit(1)
        except OSError as e:
            if e.errno not in OUTPUT_ERRNOS:
                raise
            _say(f"error: {e.filename or 'output'}: {e.strerror}")
            sys.exit(2)
        if _received:
            _say(f"interrupted by {signal.Signals(_received[0]).name}")
            sys.exit(128 + _received[0])
        sys.exit(code if isinstance(code, int) else 0)


_received = []  # the signal that ended a command: its exit status is 128 + its number, as a shell's would be


def _say(line: str) -> None:
    """On stderr, once: under torchrun every process meets the same error, and process 0 reports it."""
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(line, err=True)


def _as_interrupt(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


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
    from classifier import classify as run

    r = run(n_real=n_real, synthetic=synthetic, ratio=ratio, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
            min_steps=min_steps, val_size=val_size, seed=seed, dataset=dataset, out=out, overwrite=overwrite,
            data_dir=data_dir, device=device, log=typer.echo)
    _trained(r)


@app.command("semi-supervised")
def semi_supervised(
    n_real: int = typer.Option(100, help="Class-balanced real labelled images; the rest of the training pool is used "
                               "without labels."),
    steps: int = typer.Option(3000, help="Training steps (100..1,000,000), each of 100 labelled, 100 unlabelled and 100 "
                              "generated images."),
    rounds: int = typer.Option(1, help="Rounds of self-training after the GAN (0..10): a classifier learns the labelled "
                               "images plus the unlabelled ones the last model labels at confidence >= 0.9."),
    round_epochs: int = typer.Option(12, help="Epochs of each self-training round, over the images it learns."),
    generator: Optional[Path] = typer.Option(None, help="Unconditional generator.pt the GAN's generator starts from.",
                                             show_default="the bundled one"),
    seed: int = typer.Option(0, help="Seed for the labelled subset, the draws and the weights."),
    val_size: int = typer.Option(5000, help="Fixed validation split carved from train, never trained on."),
    out: Path = typer.Option(Path("runs/semi-supervised.pt"), help="Classifier checkpoint to write (a .json beside it)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """Train a classifier from few labels: a semi-supervised GAN's discriminator (the gan-discriminator recipe), then
    self-training from it."""
    from augment import semi_supervised as run

    r = run(n_real=n_real, steps=steps, rounds=rounds, round_epochs=round_epochs, generator=generator, seed=seed,
            val_size=val_size, out=out, overwrite=overwrite, data_dir=data_dir, device=device, log=typer.echo)
    _trained(r)


def _trained(r) -> None:
    """What classify and semi-supervised print of the classifier they trained and saved."""
    last = r.history[-1]
    val = f", validation {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    epochs = f"{last['epoch']} epochs, " if "epoch" in last else ""
    typer.echo(f"test accuracy {r.accuracy:.4f} ({r.errors} errors in {r.test_size:,}){val}")
    typer.echo("per digit: " + "  ".join(f"{c}: {a:.1%}" for c, a in enumerate(r.per_class)))
    typer.echo(f"{epochs}{last['step']:,} steps in {last['seconds']:.0f} s, {last['images_per_s']:,.0f} images/s")
    typer.echo(f"saved {r.path} (sha256 {r.sha256[:16]}...)")


@app.command()
def train(
    out: Path = typer.Option(Path("runs/gan"), help="Run folder: checkpoints, sample grids, losses.csv/png, progress.gif."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out exactly where it stopped (with its settings)."),
    epochs: Optional[int] = typer.Option(None, help="Total epochs (when resuming: the new total).", show_default="5"),
    arch: Optional[str] = typer.Option(None, help="dcgan (fast on CPU) or tutorial (the classic Keras DCGAN).",
                                       show_default="dcgan"),
    conditional: Optional[bool] = typer.Option(None, "--conditional/--unconditional",
                                               help="Class-conditional generator and discriminator.", show_default="no"),
    n_real: Optional[int] = typer.Option(None, help="Train on this class-balanced labelled subset (the one classify --n-real "
                                         "draws with the same --seed).", show_default="all 60,000 train images"),
    batch_size: Optional[int] = typer.Option(None, help="Images per step.", show_default="128, tutorial 256"),
    lr_g: Optional[float] = typer.Option(None, help="Generator learning rate.",
                                         show_default="5e-4, tutorial 1e-4"),
    lr_d: Optional[float] = typer.Option(None, help="Discriminator learning rate.",
                                         show_default="5e-4, tutorial 1e-4"),
    beta1: Optional[float] = typer.Option(None, help="Adam beta1.", show_default="0.5, tutorial 0.9"),
    beta2: Optional[float] = typer.Option(None, help="Adam beta2.", show_default="0.999"),
    nz: Optional[int] = typer.Option(None, help="Latent size.", show_default="64, tutorial 100"),
    g_width: Optional[int] = typer.Option(None, help="Generator width (channels of the last hidden layer).",
                                         show_default="48, tutorial 64"),
    d_width: Optional[int] = typer.Option(None, help="Discriminator width (channels of the first layer).",
                                         show_default="48, tutorial 64"),
    loss: Optional[str] = typer.Option(None, help="bce (non-saturating) or hinge.", show_default="bce"),
    ema: Optional[float] = typer.Option(None, help="Decay of the generator's weight average used for samples; 0 turns it off.",
                                        show_default="0.999"),
    sn: Optional[bool] = typer.Option(None, "--sn/--no-sn", help="Spectral normalisation in D (instead of batch norm).",
                                      show_default="no"),
    mbstd: Optional[bool] = typer.Option(None, "--mbstd/--no-mbstd", help="Minibatch standard deviation channel in D.",
                                         show_default="no"),
    deep: Optional[bool] = typer.Option(None, "--deep/--no-deep", help="dcgan: one more 3x3 convolution block in each network.",
                                        show_default="yes for dcgan"),
    clusters: Optional[int] = typer.Option(None, help="Self-conditioning without labels: condition both networks on this "
                                           "many k-means clusters of the training images; samples still come from noise "
                                           "alone. 0 turns it off.", show_default="50 for unconditional dcgan, else 0"),
    r1: Optional[float] = typer.Option(None, help="R1 gradient penalty weight on real images (lazy, every 16 steps); 0 turns it "
                                       "off. Per-image only without batch norm in D: use with --sn.",
                                       show_default="0"),
    diffaug: Optional[bool] = typer.Option(None, "--diffaug/--no-diffaug", help="Differentiable augmentation (translation + "
                                           "cutout) of everything D sees.", show_default="no"),
    eval_every: Optional[float] = typer.Option(None, help="Epochs between FID measurements (metrics.csv, fid.png); 0 turns "
                                               "it off.", show_default="1, or the resumed run's"),
    seed: Optional[int] = typer.Option(None, help="Seed for weights, shuffles and noise.", show_default="0"),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (with a resumable checkpoint) after this many minutes."),
    sample_every: Optional[int] = typer.Option(None, help="Also save a sample grid every N steps (one per epoch always).",
                                               show_default="0"),
    labeller: Optional[Path] = typer.Option(None, help="Semi-supervised, with --conditional --n-real: a classify checkpoint "
                                            "that labels the rest of the training pool (use one trained on the subset alone)."),
    min_confidence: Optional[float] = typer.Option(None, help="With --labeller: use its labels where it is at least this sure.",
                                                   show_default="0.9"),
    relabel_every: Optional[int] = typer.Option(None, help="With --labeller: every K epochs, the classifier this GAN "
                                                "improves (the labelled subset plus 10,000 of its samples, classical "
                                                "augmentation) becomes the labeller if it is at least as accurate on "
                                                "validation (labels.csv); 0: never.",
                                                show_default="0"),
    dataset: Optional[str] = typer.Option(None, help="mnist or fashion.", show_default="mnist"),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """Train a DCGAN, saving a sample grid per epoch, a losses CSV and plot, a GIF, an FID curve, and checkpoints."""
    options = {k: v for k, v in locals().items() if k not in ("out", "resume", "epochs", "max_minutes", "data_dir", "device")}
    from augment import train as run

    result = run(out=out, resume=resume, epochs=epochs, max_minutes=max_minutes, device=device, data_dir=data_dir,
                 log=typer.echo, **options)
    if not result.main:  # under torchrun, process 0 reports for all
        raise typer.Exit(128 + result.signal if result.signal else 0)
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
    r = result.labels
    if r:
        typer.echo(f"labeller's validation accuracy: {r['first']:.2%} at the start, {r['last']:.2%} now; {r['replaced']} of "
                   f"{r['rounds']} relabellings replaced it ({r['images']:,} training images)")
    typer.echo(f"wrote {out}/generator.pt, checkpoint.pt, samples/, losses.csv, losses.png, progress.gif"
               + (", metrics.csv, fid.png" if q else "") + (", labels.csv" if r else ""))
    if result.stopped != "finished":
        typer.echo(f"continue with: digitgen train --out {out} --resume --epochs {result.config.epochs}")
    if result.signal:
        raise typer.Exit(128 + result.signal)


@app.command()
def generate(
    generator: Optional[Path] = typer.Option(None, help="A generator.pt written by train.",
                                             show_default="the bundled one; the bundled conditional one with --balance or --digit"),
    labeller: Optional[Path] = typer.Option(None, help="A classifier checkpoint written by classify.",
                                            show_default="the bundled reference classifier"),
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
    merge: str = typer.Option("vds", help="Under torchrun: join the processes' shards as an HDF5 virtual dataset over "
                              "them (they stay beside --out) or as a copy (they are removed)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """Draw digits, pseudo-label them, keep the confident (realistic, agreed) ones, write an HDF5 synthetic dataset."""
    from augment import generate as run

    r = run(generator=generator, labeller=labeller, out=out, n=n, min_confidence=min_confidence, min_realism=min_realism,
            agree=agree, balance=balance, digit=digit, save_latents=save_latents, seed=seed, batch_size=batch_size,
            overwrite=overwrite, data_dir=data_dir, device=device, merge=merge)
    if not r.main:  # under torchrun, process 0 reports for all
        return
    typer.echo(f"wrote {out}: {r.kept:,} images, {r.kept / r.seconds:,.0f} images/s written")
    tests = [f"confidence >= {min_confidence}"] + [f"realism >= {min_realism}"] * bool(min_realism) + [f"agreement with {agree}"] * bool(agree)
    typer.echo(f"kept {r.kept:,} of {r.drawn:,} drawn; {r.passed / r.drawn:.1%} of them passed {', '.join(tests)}")
    if len(r.failed) > 1:
        typer.echo("drawn images failing each test: " + ", ".join(f"{k} {v:,}" for k, v in r.failed.items()))
    if r.agreement is not None:
        typer.echo(f"the labeller agrees with the requested class on {r.agreement:.1%} of all drawn images")
    typer.echo("class histogram: " + "  ".join(f"{c}: {k:,}" for c, k in enumerate(r.class_counts)))


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
    from augment.explore import interpolate as run

    drawn = run(generator=generator, out=out, rows=rows, steps=steps, seeds=seeds and list(_numbers(seeds, int, "seeds")),
                digit=digit, digit_grid=digit_grid, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {out}: {drawn}")


@app.command()
def show(
    file: Path = typer.Argument(..., help="An HDF5 synthetic dataset."),
    out: Optional[Path] = typer.Option(None, help="PNG to write.", show_default="FILE with .png"),
    per_class: int = typer.Option(16, help="Images per row."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Draw a PNG grid of a synthetic dataset: a row per pseudo-label, images in file (drawing) order."""
    from augment.images import show as run

    typer.echo(f"wrote {run(file, out=out, per_class=per_class, overwrite=overwrite)}: up to {per_class} images per class")


@app.command()
def evaluate(
    source: Optional[Path] = typer.Argument(None, help="A generator.pt written by train, or an HDF5 synthetic dataset.",
                                            show_default="the bundled generator"),
    n: Optional[int] = typer.Option(None, help="Samples to draw (generator) or read (HDF5, its first rows).",
                                    show_default="10,000, or all of a smaller file"),
    labeller: Optional[Path] = typer.Option(None, help="Generators: the classifier that labels the samples for CAS "
                                            "(a conditional one's too, instead of the classes asked for).",
                                            show_default="the reference classifier; the classes asked for"),
    cas: bool = typer.Option(True, help="Also train a classifier on the samples alone (CAS) and on the floor subset."),
    seed: int = typer.Option(0, help="Seed of the samples and of the real floor subset."),
    out: Optional[Path] = typer.Option(None, help="Also write the figures as JSON here."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """FID, KID, precision/recall, label entropy and CAS of a generator or dataset, beside the real floor."""
    from augment import evaluate as run
    from augment.quality import METRIC_ROWS

    r = run(source=source, n=n, labeller=labeller, cas=cas, seed=seed, out=out, overwrite=overwrite, data_dir=data_dir,
            device=device, log=typer.echo)
    typer.echo(f"{'':22}{'samples':>10}{'real floor':>12}")
    for name, key, fmt in METRIC_ROWS:
        a, b = getattr(r.samples, key), getattr(r.floor, key)
        typer.echo(f"{name:22}{'-' if a is None else format(a, fmt):>10}{'-' if b is None else format(b, fmt):>12}")
    typer.echo("predicted labels: " + "  ".join(f"{c}: {s:.1%}" for c, s in enumerate(r.samples.label_shares)))
    typer.echo(f"(floor: {r.floor.n:,} real train images, class-balanced, seed {r.floor_seed}, under the same features; "
               f"label noise: the share of labels the judge classifier disagrees with, beside its own error on real test)")
    if out:
        typer.echo(f"wrote {out}")


def _numbers(text: str, kind, name: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--{name} must be comma-separated numbers, got {text!r}") from None


@app.command()
def benchmark(
    synthetic: Optional[Path] = typer.Option(None, help="HDF5 pool of GAN samples (generate --min-confidence 0: every image "
                                             "is relabelled here, its labels are ignored).",
                                             show_default="drawn from the bundled generator into OUT/pool.h5"),
    sizes: Optional[str] = typer.Option(None, help="Real labelled sizes.", show_default="100,1000,10000,60000"),
    ratios: Optional[str] = typer.Option(None, help="Synthetic:real ratios.", show_default="0.5,1,2,4"),
    seeds: Optional[int] = typer.Option(None, help="Seeds per row (0, 1, ...).", show_default="3"),
    relabel_rounds: int = typer.Option(0, help="Also the self-training row: the real unlabelled images with classical "
                                       "augmentation, relabelled by the last classifier and retrained, K rounds in all."),
    min_confidence: float = typer.Option(0.9, help="Mix in only images the labeller is at least this sure of."),
    min_steps: Optional[int] = typer.Option(None, help="Fewest optimiser steps per classifier (the budget is 12 epochs of the "
                                            "real subset, at least this).", show_default="600"),
    quick: bool = typer.Option(False, help="A reduced sweep: sizes 100 and 1,000, ratio 1, 2 seeds, 300-step budget."),
    gan_minutes: float = typer.Option(0.0, help="Add the conditional variant: per size and seed, a conditional GAN "
                                      "trained this many minutes on the labelled subset and the labeller's labels "
                                      "(cached in OUT/gans); 0 leaves it out."),
    gan_relabel_every: int = typer.Option(0, help="With --gan-minutes: relabel every K epochs of the conditional GAN, by "
                                          "the classifier it improves (train --relabel-every); 0: never."),
    min_realism: float = typer.Option(0.0, help="Add the filtered variant: the pool's samples with at least this "
                                      "realism score in the labeller's features; 0 leaves it out."),
    discriminator_steps: int = typer.Option(0, help="Add the gan-discriminator variant: per size and seed, the classifier "
                                            "is the discriminator of a semi-supervised GAN (K+1 classes, feature "
                                            "matching, generator started from the bundled one) trained this many "
                                            "steps on the labelled subset and the other train images, and its "
                                            "control classical-matched; with --relabel-rounds, each then teaches "
                                            "self-training (+self-training rows); 0 leaves them out."),
    jobs: int = typer.Option(1, help="(size, seed) cells trained at once, each in its own process with its share of the "
                             "cores; the rows are the same as one at a time."),
    out: Path = typer.Option(Path("runs/benchmark"), help="Folder for rows.csv, summary.csv, report.md, accuracy.png."),
    overwrite: bool = typer.Option(False, help="Start afresh, discarding the rows already in --out."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """Sweep real sizes x augmentations x seeds, test every classifier on real test, report and plot."""
    from augment import benchmark as run

    def show_row(row: dict) -> None:
        typer.echo(f"  {row['size']:>6,} real  {row['variant']:<20} ratio {row['ratio']:<4g} seed {row['seed']}: "
                   f"{row['accuracy']:.4f}  ({row['steps']:,} steps, {row['seconds']:.0f} s)")

    start = time.perf_counter()
    r = run(synthetic=synthetic, out=out, sizes=sizes and _numbers(sizes, int, "sizes"),
            ratios=ratios and _numbers(ratios, float, "ratios"), seeds=seeds, relabel_rounds=relabel_rounds,
            min_confidence=min_confidence, min_steps=min_steps, quick=quick, gan_minutes=gan_minutes,
            gan_relabel_every=gan_relabel_every, min_realism=min_realism,
            discriminator_steps=discriminator_steps, jobs=jobs, overwrite=overwrite,
            data_dir=data_dir, device=device, on_row=show_row, log=typer.echo)
    if not r.main:  # under torchrun, process 0 reports for all
        return
    typer.echo(r.markdown)
    typer.echo(f"{len(r.rows)} rows, {time.perf_counter() - start:.0f} s this run; wrote {out}/rows.csv, summary.csv, "
               f"report.md, accuracy.png")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="A new folder for everything the tour writes."),
    overwrite: bool = typer.Option(False, help="Replace what an earlier demo wrote in --out."),
    data_dir: Optional[Path] = DataDir,
    device: str = Device,
):
    """The tour, in a few minutes: bundled models -> 20,000 labelled digits -> grids -> evaluate -> benchmark -> report."""
    from augment import demo as run

    start = time.perf_counter()
    r = run(out=out, overwrite=overwrite, data_dir=data_dir, device=device, log=typer.echo)
    typer.echo(f"FID {r.evaluation.samples.fid:.2f} (real floor {r.evaluation.floor.fid:.2f}); {r.generated.kept:,} digits "
               f"in {out / 'synthetic.h5'}")
    typer.echo(f"done in {time.perf_counter() - start:.0f} s: open {r.report}")


@app.command()
def report(
    folder: Path = typer.Argument(..., help="A folder written by train, benchmark or demo (or holding their outputs)."),
    out: Optional[Path] = typer.Option(None, help="HTML file to write.", show_default="FOLDER/report.html"),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """One self-contained HTML page (images embedded) of what a run folder holds: grids, curves, metrics, tables."""
    from augment.html_report import write_report

    typer.echo(f"wrote {write_report(folder, out=out, overwrite=overwrite)}")


@app.command()
def profile(
    seconds: float = typer.Option(5.0, help="Seconds spent timing each figure."),
    data_dir: Optional[Path] = DataDir,
    device: str = typer.Option("cpu", help="cpu or cuda: where every figure is measured."),
):
    """Speed, as ratios measured in one run: GAN recipes, FLOP/s vs matmul peak, generate overhead, classify."""
    from augment.profiling import profile as run

    for line in run(data_dir=data_dir, seconds=seconds, device=device).lines():
        typer.echo(line)


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
