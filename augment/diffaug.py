"""Differentiable augmentation (Zhao et al. 2020, DiffAugment): every image D sees, real or fake,
gets a random translation and cutout, so D cannot simply memorise the training images, and G's
gradients flow back through the same augmentation. Both fill with the background (-1)."""

import torch


def diff_augment(x: torch.Tensor, noise: torch.Generator, shift: float = 0.125, cut: float = 0.5) -> torch.Tensor:
    """Translate each image by up to `shift` of its size, then blank a random square `cut` of its side wide
    (clipped at the border); every image draws its own shift and square."""
    n, _, h, w = x.shape
    s = round(h * shift)
    dev = x.device  # random numbers come from the CPU generator, so a run draws the same ones on any device
    dy, dx = torch.randint(-s, s + 1, (2, n, 1, 1), generator=noise).to(dev)  # each (n, 1, 1)
    padded = torch.nn.functional.pad(x, (s, s, s, s), value=-1.0)
    rows = torch.arange(h, device=dev).view(1, h, 1) + s - dy
    cols = torch.arange(w, device=dev).view(1, 1, w) + s - dx
    x = padded[torch.arange(n, device=dev).view(n, 1, 1), 0, rows, cols].unsqueeze(1)
    size = round(h * cut)
    top, left = torch.randint(0, h + 1, (2, n, 1, 1, 1), generator=noise).to(dev) - size // 2  # centres anywhere
    rows, cols = torch.arange(h, device=dev).view(1, 1, h, 1), torch.arange(w, device=dev).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside, -1.0, x)
