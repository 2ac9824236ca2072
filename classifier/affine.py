"""Classical augmentation: a random affine warp per image, done for a whole batch in one call."""

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, shift: float = 0.1,
                  scale: float = 0.1, shear: float = 10.0) -> torch.Tensor:
    """Warp each image of x (N, 1, H, W) in [-1, 1] by its own rotation, shift (fraction of size),
    scale and shear; uncovered pixels become background (-1)."""
    n = x.shape[0]

    def uniform(low, high):
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-degrees, degrees) * (math.pi / 180)
    skew = torch.tan(uniform(-shear, shear) * (math.pi / 180))
    zoom = uniform(1 - scale, 1 + scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output to input coordinates (a rotation-scale, then a shear along x, then a shift).
    theta = torch.stack([
        torch.stack([cos + skew * sin, -sin + skew * cos, uniform(-2 * shift, 2 * shift)], 1),
        torch.stack([sin, cos, uniform(-2 * shift, 2 * shift)], 1),
    ], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1
