"""Conversions between stored uint8 digits and the [-1, 1] floats models see."""

import torch


def to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [-1, 1]; done per batch to keep memory uint8."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (N, 1, 28, 28) in [-1, 1] -> uint8 (N, 28, 28), rounding to the nearest grey level."""
    return x.squeeze(1).add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)
