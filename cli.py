"""digitgen command line: thin. Parses options, calls the packages, prints."""

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from data.errors import InputError


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

DataDir = typer.Option(None, "--data-dir", help="Folder of the four IDX files [default: $DIGITGEN_DATA_DIR, else data/mnist].")
Device = typer.Option("auto", help="auto (CUDA if present), cpu or cuda.")


@app.command()
def classify(
    n_real: Optional[int] = typer.Option(None, help="Class-balanced real labelled images [default: the whole training pool]."),
    synthetic: Optional[Path] = typer.Option(None, help="HDF5 synthetic dataset to mix in."),
    ratio: Optional[float] = typer.Option(None, help="Synthetic images per real image [default: 1 with --synthetic]."),
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
    from classifier.train import TrainConfig, evaluate, fit, use_all_cores
    from data import mnist

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_steps=min_steps, augment=augment, seed=seed)
    config.check()
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists: pass --overwrite to replace it")
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
def info(file: Path = typer.Argument(..., help="An HDF5 synthetic dataset.")):
    """Print a synthetic dataset's attributes, columns and class histogram."""
    from data.synthetic import summary

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
    typer.echo("class histogram:")
    top = max(s["class_counts"]) or 1
    for digit, count in enumerate(s["class_counts"]):
        typer.echo(f"  {digit}: {count:>8,}  {'#' * round(40 * count / top)}")


if __name__ == "__main__":
    app()
