"""DCGAN generator and discriminator for 28x28 grey digits, in two presets.

`dcgan` (default) is sized for CPU: 4x4 stride-2 transposed convolutions 7 -> 14 -> 28, with (by
default, from the recipe study) a 3x3 convolution block at 14x14 in G and at 7x7 in D, and,
unconditional, self-conditioning on 50 clusters.
`tutorial` copies the classic Keras DCGAN-for-MNIST the original notebook used, so benchmarks
can compare against it on the same footing. With `conditional`, the generator reads a one-hot
class beside the noise and the discriminator adds a projection term (Miyato & Koyama, 2018).
With `clusters` K, the same machinery conditions on K k-means clusters of the training images
instead (see clusters.py): no labels, and the generator still draws from noise alone.
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from data.errors import InputError

ARCHS = ("dcgan", "tutorial")


@dataclass(frozen=True)
class GanSpec:
    """What a generator/discriminator pair is built from; stored in every checkpoint."""

    arch: str = "dcgan"
    nz: int = 64
    g_width: int = 64
    d_width: int = 64
    conditional: bool = False
    sn: bool = False
    mbstd: bool = False
    deep: bool = False  # dcgan: one more 3x3 conv block in G (at 14x14) and in D (at 7x7); the preset's default
    clusters: int = 0  # self-conditioning on this many k-means clusters (0: off); not with conditional

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise InputError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if any(type(v) is not int for v in (self.nz, self.g_width, self.d_width, self.clusters)):  # a damaged record
            raise InputError("latent size, widths and clusters must be whole numbers")
        if not (1 <= self.nz <= 4096 and 1 <= self.g_width <= 1024 and 1 <= self.d_width <= 1024):  # before any weight
            raise InputError("latent size must be in 1..4096 and widths in 1..1024")
        if self.clusters and not (2 <= self.clusters <= 1000 and self.nz >= 2 and not self.conditional):
            raise InputError("clusters must be in 2..1000, with a latent size of at least 2, and without conditional")

    @staticmethod
    def preset(arch: str, **overrides) -> "GanSpec":
        """The preset's defaults (the tutorial's are fixed by the Keras original), then overrides. dcgan's come from
        the recipe study: widths 48, and, without labels, 50 clusters (a conditional generator has classes)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unconditional = {} if given.get("conditional") else {"clusters": 50}
        base = {"dcgan": {"deep": True, "g_width": 48, "d_width": 48, **unconditional},
                "tutorial": {"nz": 100, "g_width": 64, "d_width": 64}}.get(arch, {})
        return GanSpec(arch=arch, **{**base, **given})

    def as_dict(self) -> dict:
        """Its fields; `clusters` (added later) only when on, so the records of earlier runs, sweeps among
        them, still match those of today's for the same settings."""
        d = asdict(self)
        if not self.clusters:
            del d["clusters"]
        return d


def _classes(spec: GanSpec) -> int:
    return 10 if spec.conditional else spec.clusters


class Generator(nn.Module):
    def __init__(self, spec: GanSpec):
        super().__init__()
        self.spec = spec
        nz, w = spec.nz - bool(spec.clusters) + _classes(spec), spec.g_width
        if spec.clusters:  # the clusters' shares of the training set: training sets them
            self.register_buffer("prior", torch.full((spec.clusters,), 1 / spec.clusters))
        if spec.arch == "dcgan":
            self.project = nn.Sequential(nn.Linear(nz, 2 * w * 49, bias=False), nn.BatchNorm1d(2 * w * 49), nn.ReLU())
            deep = [nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()] if spec.deep else []
            self.body = nn.Sequential(
                nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), *deep,
                nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Tanh(),
            )
            self.channels = 2 * w
        else:  # Keras tutorial: Dense 7x7x256 -> ConvT 128 5x5 s1 -> ConvT 64 5x5 s2 -> ConvT 1 5x5 s2, no biases
            self.project = nn.Sequential(nn.Linear(nz, 256 * 49, bias=False), nn.BatchNorm1d(256 * 49), nn.LeakyReLU(0.3))
            self.body = nn.Sequential(
                nn.ConvTranspose2d(256, 2 * w, 5, 1, 2, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.3),
                nn.ConvTranspose2d(2 * w, w, 5, 2, 2, output_padding=1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.3),
                nn.ConvTranspose2d(w, 1, 5, 2, 2, output_padding=1, bias=False), nn.Tanh(),
            )
            self.channels = 256
        init_weights(self, spec.arch)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images for noise z and classes y; with clusters, y (training) or else z's first latent picks them."""
        if self.spec.clusters:
            y, z = self.cluster_of(z) if y is None else y, z[:, 1:]
        if _classes(self.spec):
            z = torch.cat([z, nn.functional.one_hot(y, _classes(self.spec)).to(z.dtype)], 1)
        return self.body(self.project(z).view(-1, self.channels, 7, 7))

    def check_prior(self) -> None:
        """A damaged file's cluster shares would draw clusters in the wrong proportions without another word."""
        if self.spec.clusters and not (self.prior.min() >= 0 and abs(self.prior.sum().item() - 1) < 1e-3):
            raise ValueError("its cluster shares are not a distribution")

    def cluster_of(self, z: torch.Tensor) -> torch.Tensor:
        """The cluster the first latent falls in, by its normal quantile against the prior's cumulative shares,
        so N(0, 1) noise draws each cluster as often as the training set holds it."""
        u = torch.special.ndtr(z[:, 0].float())
        edges = self.prior.cumsum(0)[:-1].to(u.dtype)
        return torch.searchsorted(edges, u.contiguous(), right=True)


class Discriminator(nn.Module):
    def __init__(self, spec: GanSpec):
        super().__init__()
        self.spec = spec
        w = spec.d_width
        if spec.arch == "dcgan":
            def norm():
                return nn.Identity() if spec.sn else nn.BatchNorm2d(2 * w)

            deep = [nn.Conv2d(2 * w, 2 * w, 3, 1, 1, bias=spec.sn), norm(), nn.LeakyReLU(0.2)] if spec.deep else []
            self.body = nn.Sequential(
                nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(w, 2 * w, 4, 2, 1, bias=spec.sn), norm(), nn.LeakyReLU(0.2), *deep,
            )
        else:  # Keras tutorial: Conv 64 5x5 s2 -> LeakyReLU -> Dropout 0.3 -> Conv 128 5x5 s2 -> ... -> Dense 1
            self.body = nn.Sequential(
                nn.Conv2d(1, w, 5, 2, 2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
                nn.Conv2d(w, 2 * w, 5, 2, 2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
            )
        features = (2 * w + spec.mbstd) * 49
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(_classes(spec), features) if _classes(spec) else None
        init_weights(self, spec.arch)
        if spec.sn:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logits (N,)."""
        h = self.body(x)
        if self.spec.mbstd:
            h = torch.cat([h, minibatch_std(h)], 1)
        h = h.flatten(1)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One extra channel: the feature standard deviation within groups of `group` images, averaged
    over features and broadcast back, so a batch of near-identical fakes is easy to spot."""
    n, c, height, width = h.shape
    g = math.gcd(group, n)  # images i, i + n/g, i + 2n/g, ... form a group
    x = h.reshape(g, -1, c * height * width)
    std = (x - x.mean(0)).square().mean(0).add(1e-8).sqrt().mean(1)  # by hand: torch's var backward is 6x slower here
    return std.repeat(g).view(n, 1, 1, 1).expand(n, 1, height, width)


def init_weights(module: nn.Module, arch: str) -> None:
    """DCGAN initialisation (N(0, 0.02) weights, batch-norm scales N(1, 0.02)); for `tutorial`,
    Keras's defaults instead (Glorot-uniform weights, batch-norm momentum 0.99, epsilon 1e-3)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            if arch == "tutorial":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if arch == "tutorial":
                m.momentum, m.eps = 0.01, 1e-3
            else:
                nn.init.normal_(m.weight, 1.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
