"""Latent-space exploration: spherical interpolation between latents, and digit-by-style grids."""

from pathlib import Path

import torch

from augment.checkpoint import BUNDLED, load_generator
from augment.images import grid_image, save_gif, save_grid
from augment.models import Generator
from data.errors import InputError, prepare_output
from data.files import check_seed, derived_seed
from data.pixels import to_uint8


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (N, nz) at fractions t (T,) -> (N, T, nz).
    Gaussian latents live near a sphere, where a straight line would pass through unlikely, low-norm points."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)


def latents(nz: int, seeds: list[int]) -> torch.Tensor:
    """One latent per seed, the same for the same seed whatever else is drawn."""
    return torch.stack([torch.randn(nz, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.inference_mode()
def interpolation(g: Generator, starts: torch.Tensor, ends: torch.Tensor, steps: int,
                  digits: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (rows * steps, 28, 28): row i walks from starts[i] to ends[i] (conditional: as digits[i])."""
    path = slerp(starts, ends, torch.linspace(0, 1, steps)).reshape(-1, starts.shape[1])
    y = digits.repeat_interleave(steps) if digits is not None else None
    return to_uint8(g(path, y))


@torch.inference_mode()
def digit_by_style(g: Generator, styles: torch.Tensor) -> torch.Tensor:
    """Conditional generators: uint8 images (rows * 10, 28, 28), one row per style latent, one column per digit."""
    z = styles.repeat_interleave(10, 0)
    return to_uint8(g(z, torch.arange(10).repeat(len(styles))))


def interpolate(generator: str | Path | None = None, out: str | Path = "runs/interpolation.png", rows: int = 8,
                steps: int = 10, seeds: list[int] | None = None, digit: int | None = None, digit_grid: bool = False,
                seed: int = 0, overwrite: bool = False) -> str:
    """Write a .png grid (a row per interpolation) or a .gif walk through the latents of `seeds` (default: rows + 1
    seeded ones), or a digit-by-style grid; returns what was drawn, in words."""
    out = Path(out)
    if out.suffix not in (".png", ".gif") or (digit_grid and out.suffix != ".png"):
        raise InputError(f"{out}: choose a .png or .gif output (a .png for --digit-grid)")
    if digit_grid and digit is not None:
        raise InputError("--digit-grid draws every digit: leave out --digit")
    prepare_output(out, overwrite)
    if not 1 <= rows <= 100 or not 2 <= steps <= 100:
        raise InputError("need --rows in 1..100 and --steps in 2..100")
    if digit is not None and not 0 <= digit <= 9:
        raise InputError(f"digit must be in 0..9, got {digit}")
    visit = list(seeds) if seeds else [derived_seed(seed * 1000, i) for i in range(rows + 1)]
    if len(visit) < 2 or len(visit) > 101:
        raise InputError("--seeds needs 2..101 seeds")
    for s in [seed, *visit]:
        check_seed(s)
    g, _ = load_generator(generator or BUNDLED)
    if (digit_grid or digit is not None) and not g.spec.conditional:
        raise InputError("--digit and --digit-grid need a conditional generator (train --conditional)")
    z = latents(g.spec.nz, visit)
    if digit_grid:
        save_grid(digit_by_style(g, z[:rows]), out)
        return f"{min(rows, len(z))} styles x digits 0-9"
    pairs = len(visit) - 1
    digits = None
    if g.spec.conditional:
        digits = torch.full((pairs,), digit) if digit is not None else torch.arange(pairs) % 10
    images = interpolation(g, z[:-1], z[1:], steps, digits)
    if out.suffix == ".png":
        save_grid(images, out, nrow=steps)
        return f"{pairs} interpolations x {steps} steps"
    walk = [i for i in range(len(images)) if i == 0 or i % steps]  # each segment starts where the last ended
    save_gif([grid_image(images[i:i + 1], 1, scale=6) for i in walk], out, ms_per_frame=80)
    return f"{len(walk)} frames through {len(visit)} latents"
