"""Latent-space exploration: spherical interpolation between latents, and digit-by-style grids."""

import torch

from augment.models import Generator
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
