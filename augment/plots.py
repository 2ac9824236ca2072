"""Plots of GAN training."""

from pathlib import Path

from matplotlib.figure import Figure  # drawn without pyplot: a notebook keeps its own backend
import pandas as pd


def plot_losses(csv_path: Path, png_path: Path) -> Path:
    """D and G losses against step, from the run's losses.csv."""
    log = pd.read_csv(csv_path)
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.plot(log["step"], log["d_loss"], label="discriminator")
    ax.plot(log["step"], log["g_loss"], label="generator")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path


def plot_fid(csv_path: Path, png_path: Path) -> Path:
    """FID against training minutes and against steps (log scale), with the real floor and 10x it."""
    log = pd.read_csv(csv_path)
    floor = log["floor"].iloc[-1]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, x, label in zip(axes, ("minutes", "step"), ("training minutes", "step")):
        ax.plot(log[x], log["fid"], marker=".", label="samples")
        ax.axhline(floor, color="green", linestyle="--", label=f"real floor {floor:.2f}")
        ax.axhline(10 * floor, color="grey", linestyle=":", label="10x floor")
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("FID (reference features, vs train)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path
