"""Plots of GAN training."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_losses(csv_path: Path, png_path: Path) -> Path:
    """D and G losses against step, from the run's losses.csv."""
    log = pd.read_csv(csv_path)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(log["step"], log["d_loss"], label="discriminator")
    ax.plot(log["step"], log["g_loss"], label="generator")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
