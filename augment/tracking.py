"""Quality while a GAN trains: FID of its samples against real train images, beside the real floor,
and how far its class shares stray from the real ones (imbalance alone can cost tens of FID points).

The probe never looks at the test set: its reference is the fixed validation split (5,000
class-balanced train images; a GAN on all of train has seen them, as it has every real image)
and its floor is a class-balanced real subset of the same size as the samples, from the rest of
train, under the pinned reference classifier's features."""

import torch

from augment.pipeline import draw
from augment.quality import embed, fid
from classifier.checkpoint import load_reference
from data import mnist
from data.mnist import Digits

SAMPLES = 5000


class FidProbe:
    def __init__(self, train: Digits, n: int = SAMPLES, seed: int = 0):
        self.n, self.seed = n, seed
        self.reference = load_reference()
        self.real = embed(self.reference, train.images[mnist.validation_split(train.labels)[1]])[0]
        floor_set = train.images[mnist.labelled_subset(train.labels, n, seed)]
        self.floor = fid(self.real, embed(self.reference, floor_set)[0])
        self.shares = torch.bincount(train.labels, minlength=10) / len(train)

    def __call__(self, g: torch.nn.Module) -> dict:
        """FID of n seeded samples (the same noise every time, so the curve shows the generator change), and
        the largest gap, in points, between a class's share of the samples (reference classifier) and of train."""
        was_training = g.training
        g.eval()
        images, _ = draw(g, self.n, self.seed)
        g.train(was_training)
        features, labels = embed(self.reference, images)
        gap = (torch.bincount(torch.from_numpy(labels), minlength=10) / self.n - self.shares).abs().max().item()
        return {"fid": fid(self.real, features), "class_gap": 100 * gap}
