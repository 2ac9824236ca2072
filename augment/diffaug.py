"""Differentiable augmentation (Zhao et al. 2020, DiffAugment): every image D sees, real or fake,
gets a random translation and cutout, so D cannot simply memorise the training images, and G's
gradients flow back through the same augmentation. Both fill with the background (-1)."""

import torch


def diff_augment(x: torch.Tensor, noise: torch.Generator, shift: float = 0.125, cut: float = 0.5) -> torch.Tensor:
    """Translate each image by up to `shift` of its size, then blank a random square of `cut` of its size."""
    n, _, h, w = x.shape
    s = round(h * shift)
    dy, dx = torch.randint(-s, s + 1, (2, n, 1, 1), generator=noise)  # each (n, 1, 1)
    padded = torch.nn.functional.pad(x, (s, s, s, s), value=-1.0)
    rows = torch.arange(h).view(1, h, 1) + s - dy
    cols = torch.arange(w).view(1, 1, w) + s - dx
    x = padded[torch.arange(n).view(n, 1, 1), 0, rows, cols].unsqueeze(1)
    cy, cx = torch.randint(0, h, (2, n, 1, 1, 1), generator=noise)
    half = round(h * cut) / 2
    inside = ((torch.arange(h).view(1, 1, h, 1) - cy).abs() < half) & ((torch.arange(w).view(1, 1, 1, w) - cx).abs() < half)
    return torch.where(inside, -1.0, x)
