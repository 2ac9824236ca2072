"""A classifier that is a GAN's discriminator: the semi-supervised GAN of Salimans et al. (2016). A DigitCNN's
10 logits are read as 11 classes, the ten digits and "fake" (its logit fixed at 0), so that unlabelled real
images teach it too: it learns the labelled subset's classes (with classical augmentation), calls unlabelled
real images real and a generator's draws fake, while the generator learns to match the mean of the
discriminator's penultimate features on real images (feature matching). The generator starts from a trained
one: from scratch, the minutes a CPU sweep can spend are not enough for it to draw digits."""

import copy
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from classifier.affine import random_affine
from classifier.model import DigitCNN
from data.errors import Diverged, InputError
from data.files import autocast, resolve_device
from data.mnist import Digits
from data.pixels import to_model

BATCH = 100  # labelled, unlabelled and generated images each, per step
LR, LR_G = 2e-3, 2e-4  # Adam: the discriminator's on a one-cycle schedule (it cycles beta1 too), the generator's beta1 0.5


def check_steps(steps: int, option: str, zero: str = "") -> None:
    """Fewer than 100 steps are too few for the one-cycle schedule to mean anything; a million is days on a CPU."""
    if not 100 <= steps <= 1_000_000:
        raise InputError(f"{option} must be in 100..1,000,000{zero}, got {steps}")


def require_unconditional(generator, source) -> None:
    """Feature matching draws from the generator with noise alone: a conditional one would need classes."""
    if generator.spec.conditional:
        raise InputError(f"{source}: conditional; the semi-supervised GAN needs an unconditional generator")


def discriminator_loss(labelled: torch.Tensor, labels: torch.Tensor, unlabelled: torch.Tensor,
                       generated: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled logits, plus -log P(real) of unlabelled real images and -log P(fake) of
    generated ones, halved, where P(real) = Z / (Z + 1) and Z is the sum of exp(logits) over the digits."""
    z_unl, z_gen = unlabelled.logsumexp(1), generated.logsumexp(1)
    return F.cross_entropy(labelled, labels) + 0.5 * (F.softplus(-z_unl).mean() + F.softplus(z_gen).mean())


def fit_discriminator(real: Digits, unlabelled: torch.Tensor, generator, steps: int, seed: int,
                      device: str = "cpu", progress: bool = False) -> DigitCNN:
    """The discriminator (eval mode) after `steps` steps on labelled `real`, uint8 `unlabelled` images and draws
    from a copy of the unconditional `generator`, which is left as it was."""
    require_unconditional(generator, "the generator")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    d, g = DigitCNN().to(dev), copy.deepcopy(generator).to(dev).train()
    opt_d = torch.optim.Adam(d.parameters(), LR)
    opt_g = torch.optim.Adam(g.parameters(), LR_G, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt_d, max_lr=LR, total_steps=steps, pct_start=0.1)

    def pick(images: torch.Tensor) -> torch.Tensor:
        return images[torch.randint(len(images), (BATCH,), generator=rng)]

    def noise() -> torch.Tensor:
        return torch.randn(BATCH, g.spec.nz, generator=rng).to(dev)

    for step in tqdm(range(1, steps + 1), desc="semi-supervised", unit="step", disable=None if progress else True,
                     leave=False):
        idx = torch.randint(len(real), (BATCH,), generator=rng)
        labelled = random_affine(to_model(real.images[idx]), rng)
        with torch.no_grad(), autocast(dev):
            fake = g(noise()).float()
        d.train()
        with autocast(dev):  # one forward for all three: BatchNorm normalises them together
            logits = d(torch.cat([labelled.to(dev), to_model(pick(unlabelled)).to(dev), fake])).float()
        lab, unl, gen = logits.split(BATCH)
        loss_d = discriminator_loss(lab, real.labels[idx].to(dev), unl, gen)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        schedule.step()
        with autocast(dev):
            features = d.features(torch.cat([to_model(pick(unlabelled)).to(dev), g(noise())])).float()
        loss_g = (features[:BATCH].detach().mean(0) - features[BATCH:].mean(0)).pow(2).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if (step % 100 == 0 or step == steps) and not (math.isfinite(loss_d.item()) and math.isfinite(loss_g.item())):
            raise Diverged(f"the semi-supervised GAN's training diverged at step {step}")
    return d.eval()
