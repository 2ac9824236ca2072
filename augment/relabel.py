"""Semi-supervised conditional training's labels: the labelled subset, plus the rest of the training pool where
a labeller is sure. With --relabel-every K, every K epochs the classifier the GAN is there to improve (DigitCNN
on the labelled subset plus SAMPLES of the GAN's own class-balanced samples, with classical augmentation)
becomes the labeller if it is at least as accurate on validation, so the GAN's labels get better as its samples
do, and its samples as its labels do."""

import torch

from augment.pipeline import draw_to_mix
from classifier.mixing import mix
from classifier.model import DigitCNN
from classifier.train import TrainConfig, evaluate, fit, pseudo_label
from data.errors import InputError
from data.mnist import Digits

SAMPLES = 10_000  # GAN samples in the improved classifier's training set: enough to carry what the GAN learnt
UNSURE = -1  # the assignment of an unlabelled image no labeller has been sure of


class Labels:
    """The labelled subset and the unlabelled images of the training pool, the labeller of the moment, and its
    assignments: a label for each unlabelled image it is sure of, UNSURE for the others."""

    def __init__(self, labelled: Digits, unlabelled: torch.Tensor, val: Digits, labeller: DigitCNN,
                 min_confidence: float, device: torch.device = torch.device("cpu")):
        self.labelled, self.unlabelled, self.val, self.min_confidence = labelled, unlabelled, val, min_confidence
        self.device = device
        self.labeller, self.assigned = labeller, self.assign(labeller)

    def assign(self, labeller: DigitCNN) -> torch.Tensor:
        probs, sure = pseudo_label(labeller, self.unlabelled, self.min_confidence)
        return torch.where(sure, probs.argmax(1), UNSURE).to(torch.int8)

    def training_set(self) -> Digits:
        """The labelled subset, then the unlabelled images the labeller is sure of, with its labels."""
        sure = self.assigned != UNSURE
        return Digits(torch.cat([self.labelled.images, self.unlabelled[sure]]),
                      torch.cat([self.labelled.labels, self.assigned[sure].long()]))

    def improve(self, g, seed: int, least: int) -> bool:
        """Train the classifier being improved on the labelled subset and SAMPLES of g's samples (those the current
        labeller gives the class asked for) and make it the labeller, unless too few of g's samples pass (a GAN
        still learning), it is less accurate on validation than the labeller (its labels would be worse), or its
        labels would leave fewer than `least` training images. Returns whether it replaced the labeller."""
        was_training = g.training
        g.eval()
        images, asked = draw_to_mix(g, SAMPLES, seed)
        g.train(was_training)
        try:
            data = mix(self.labelled, images, SAMPLES / len(self.labelled), seed, labels=asked, labeller=self.labeller,
                       min_confidence=self.min_confidence)
        except InputError:
            return False
        model, _ = fit(data, TrainConfig(augment="classical", seed=seed), device=self.device.type, progress=False)
        if evaluate(model, self.val) < self.accuracy():
            return False
        assigned = self.assign(model)
        if len(self.labelled) + int((assigned != UNSURE).sum()) < least:
            return False
        self.labeller, self.assigned = model, assigned
        return True

    def restore(self, labeller_state: dict, assigned: torch.Tensor) -> None:
        """A checkpoint's labeller and its assignments, as saved (labelling again could round otherwise)."""
        if not (isinstance(assigned, torch.Tensor) and assigned.dtype == torch.int8
                and assigned.shape == (len(self.unlabelled),) and UNSURE <= assigned.min() <= assigned.max() <= 9):
            raise ValueError("its labels do not fit the unlabelled images")
        labeller = DigitCNN().to(self.device)
        labeller.load_state_dict(labeller_state)
        self.labeller, self.assigned = labeller.eval(), assigned

    def accuracy(self) -> float:
        """On the validation split."""
        return evaluate(self.labeller, self.val)
