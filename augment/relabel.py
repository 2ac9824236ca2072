"""Semi-supervised conditional training's labels: the labelled subset, plus the rest of the training pool where
a labeller is sure. With --relabel-every K, every K epochs the classifier the GAN is there to improve (DigitCNN
on the labelled subset plus the GAN's own class-balanced samples, with classical augmentation) becomes the
labeller, so the GAN's labels get better as its samples do, and its samples as its labels do."""

import math

import torch

from augment.pipeline import draw
from classifier.mixing import mix
from classifier.model import DigitCNN
from classifier.train import TrainConfig, evaluate, fit, pseudo_label
from data.errors import InputError
from data.mnist import Digits

RATIO = 4  # GAN samples per labelled image in the improved classifier's training set: the benchmark's largest ratio
MIN_DRAWN = 1_000


class Labels:
    """The labelled subset and the unlabelled images of the training pool, and the labeller of the moment."""

    def __init__(self, labelled: Digits, unlabelled: torch.Tensor, val: Digits, labeller: DigitCNN,
                 min_confidence: float):
        self.labelled, self.unlabelled, self.val, self.labeller = labelled, unlabelled, val, labeller
        self.min_confidence = min_confidence

    def training_set(self) -> Digits:
        """The labelled subset, then the unlabelled images the labeller is sure of, with its labels."""
        probs, keep = pseudo_label(self.labeller, self.unlabelled, self.min_confidence)
        return Digits(torch.cat([self.labelled.images, self.unlabelled[keep]]),
                      torch.cat([self.labelled.labels, probs.argmax(1)[keep]]))

    def improve(self, g, seed: int) -> None:
        """Train the classifier being improved on the labelled subset and RATIO x as many of g's samples (kept where
        the current labeller agrees with the class asked for) and make it the labeller. While fewer than half of
        g's samples pass (a GAN still learning), the labeller stays."""
        was_training = g.training
        g.eval()
        images, asked = draw(g, max(MIN_DRAWN, 2 * math.ceil(RATIO * len(self.labelled))), seed)
        g.train(was_training)
        try:
            data = mix(self.labelled, images, RATIO, seed, labels=asked, labeller=self.labeller,
                       min_confidence=self.min_confidence)
        except InputError:
            return
        self.labeller, _ = fit(data, TrainConfig(augment="classical", seed=seed), progress=False)

    def accuracy(self) -> float:
        """On the validation split."""
        return evaluate(self.labeller, self.val)
