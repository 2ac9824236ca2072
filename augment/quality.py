"""GAN quality, measured on the pinned reference classifier's features against real MNIST test.

Every metric is also computed for a real train subset of the same size against the same test set:
that floor is what a perfect generator would score, so a figure is only read beside it."""

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import torch

from classifier.checkpoint import load_reference
from classifier.model import DigitCNN
from classifier.train import TrainConfig, batched, evaluate, fit, predict_proba
from data.files import device_of
from data.mnist import Digits


# How each figure is named and printed, wherever it is shown (evaluate, report).
METRIC_ROWS = (("FID", "fid", ".2f"), ("KID", "kid", ".3f"), ("precision", "precision", ".3f"),
               ("recall", "recall", ".3f"), ("label entropy (bits)", "label_entropy_bits", ".3f"), ("CAS", "cas", ".4f"),
               ("label noise (judge)", "label_noise", ".2%"))


@dataclass(frozen=True)
class Quality:
    n: int
    fid: float
    kid: float  # unbiased MMD^2, cubic polynomial kernel, mean over subsets
    kid_std: float
    precision: float  # share of samples inside the real manifold (fidelity)
    recall: float  # share of real images inside the samples' manifold (coverage)
    label_shares: list[float]  # the reference classifier's predicted classes
    label_entropy_bits: float  # log2(10) = 3.32 for perfectly even classes; mode collapse lowers it
    cas: float | None  # accuracy on real test of a classifier trained on these images alone
    label_noise: float | None  # share of labels an independent classifier (the judge) disagrees with

    def as_dict(self) -> dict:
        return asdict(self)


def embed(model: DigitCNN, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (N, 128) float64 and predicted labels of uint8 images (N, 28, 28)."""
    f = batched(model.eval().features, images, device_of(model))
    with torch.inference_mode():
        labels = model.head(f.to(device_of(model))).argmax(1).cpu()
    return f.double().numpy(), labels.numpy()


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017)."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            raise scipy.linalg.LinAlgWarning
    except scipy.linalg.LinAlgWarning:  # singular (dead ReLU features): regularise as pytorch-fid does
        eps = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3,
    averaged over random subsets; returns mean and std."""
    d, m = real.shape[1], min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _kth_distance(x: torch.Tensor, k: int, chunk: int = 2000) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2000) -> float:
    """Share of points lying within at least one centre's ball."""
    hits = [(torch.cdist(points[i:i + chunk], centres) <= radii).any(1) for i in range(0, len(points), chunk)]
    return torch.cat(hits).float().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
    balls reaching every point's k-th nearest neighbour."""
    r, f = torch.from_numpy(real).float(), torch.from_numpy(fake).float()
    return _inside(f, r, _kth_distance(r, k)), _inside(r, f, _kth_distance(f, k))


def real_manifold(real: np.ndarray, labels: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """What realism() measures against, computed once: the real points whose k-NN radii are in the smaller
    half (outliers' wide balls would cover anything), and those radii. The halves are taken per class:
    a global median would drop most of the loosely clustered digits (2, 8) and with them every sample of
    those classes (measured: 0.1% 2s kept at realism >= 1, from 6.6% drawn)."""
    r = torch.from_numpy(real).float()
    radii = _kth_distance(r, k)
    core = torch.zeros(len(r), dtype=torch.bool)
    for c in labels.unique():
        mine = labels == c
        core |= mine & (radii <= radii[mine].median())
    return r[core], radii[core]


def realism(manifold: tuple[torch.Tensor, torch.Tensor], fake: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """Realism score of each sample (Kynkaanniemi et al. 2019): the largest ratio of a real point's k-NN
    radius to its distance from the sample. >= 1: inside the real manifold; larger: nearer its core."""
    r, radii = manifold
    f = torch.from_numpy(fake).float()
    scores = [(radii / torch.cdist(f[i:i + chunk], r).clamp_min(1e-12)).max(1).values for i in range(0, len(f), chunk)]
    return torch.cat(scores).numpy() if scores else np.empty(0, np.float32)


def label_distribution(labels: np.ndarray) -> tuple[list[float], float]:
    shares = np.bincount(labels, minlength=10) / max(len(labels), 1)
    nonzero = shares[shares > 0]
    return shares.tolist(), float(-(nonzero * np.log2(nonzero)).sum())


def measure(images: torch.Tensor, labels: torch.Tensor | None, test: Digits, reference: DigitCNN | None = None,
            cas_config: TrainConfig | None = TrainConfig(), progress: bool = True, judge: DigitCNN | None = None,
            device: str = "cpu") -> Quality:
    """All metrics for uint8 images against the real test set. labels (the images' pseudo-labels or
    requested classes) are needed for CAS and label noise only; cas_config None skips CAS, judge None
    the label noise estimate."""
    reference = reference or load_reference()
    real, _ = embed(reference, test.images)
    fake, predicted = embed(reference, images)
    kid_mean, kid_std = kid(real, fake)
    precision, recall = precision_recall(real, fake)
    shares, entropy = label_distribution(predicted)
    cas = None
    if labels is not None and cas_config is not None:
        model, _ = fit(Digits(images, labels), cas_config, device=device, progress=progress)
        cas = evaluate(model, test)
    noise = None
    if labels is not None and judge is not None:
        noise = (predict_proba(judge, images).argmax(1) != labels).float().mean().item()
    return Quality(len(images), fid(real, fake), kid_mean, kid_std, precision, recall, shares, entropy, cas, noise)
