import pytest
import torch

from augment.checkpoint import BUNDLED, BUNDLED_CONDITIONAL, load_generator
from augment.semi_supervised import fit_discriminator
from classifier.train import evaluate
from data import mnist
from data.errors import InputError


def test_the_discriminator_learns_the_digits_seeded_and_leaves_the_generator_alone(train, test_digits):
    g, _ = load_generator(BUNDLED)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    real = train.subset(mnist.labelled_subset(train.labels, 100, 0))
    unlabelled = train.images[:5000]
    d = fit_discriminator(real, unlabelled, g, 60, seed=0)
    assert not d.training and evaluate(d, test_digits.subset(torch.arange(1000))) > 0.5  # chance is 0.1
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    once, twice = (fit_discriminator(real, unlabelled, g, 3, seed=1).state_dict() for _ in range(2))
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_a_conditional_generator_is_refused(train):
    g, _ = load_generator(BUNDLED_CONDITIONAL)
    with pytest.raises(InputError, match="needs an unconditional generator"):
        fit_discriminator(train.subset(torch.arange(10)), train.images[:100], g, 1, seed=0)
