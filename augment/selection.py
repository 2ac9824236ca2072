"""Which drawn samples to keep: those the labeller is sure of, that lie on the real digits' manifold
(realism score on the reference features), and whose label a second, independent classifier agrees with."""

from dataclasses import dataclass

import torch

from augment.quality import embed, real_manifold, realism
from classifier.checkpoint import load_reference
from classifier.model import DigitCNN
from classifier.train import predict_proba
from data import mnist
from data.mnist import Digits

REAL_IMAGES = 10_000  # class-balanced train images whose features span the real manifold


@dataclass
class Selection:
    min_realism: float = 0.0  # 0: no realism filter
    second: DigitCNN | None = None  # keep only samples this classifier labels the same way
    real: Digits | None = None  # train images, needed for the realism filter

    def __post_init__(self):
        on = {"confidence": True, "realism": bool(self.min_realism), "agreement": self.second is not None}
        self.tests = [test for test, used in on.items() if used]
        if self.min_realism:
            self.reference = load_reference()
            idx = mnist.labelled_subset(self.real.labels, REAL_IMAGES, seed=0)
            self.manifold = real_manifold(embed(self.reference, self.real.images[idx])[0], self.real.labels[idx])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 confident: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Mask of the images that pass every test (confident: the labeller's, from pseudo_label), and how many
        fail each of self.tests."""
        tests = {"confidence": confident}
        if self.min_realism:
            tests["realism"] = torch.from_numpy(realism(self.manifold, embed(self.reference, images)[0]) >= self.min_realism)
        if self.second is not None:
            tests["agreement"] = predict_proba(self.second, images).argmax(1) == labels
        keep = torch.ones(len(images), dtype=torch.bool)
        for passed in tests.values():
            keep &= passed
        return keep, [int((~tests[name]).sum()) for name in self.tests]
