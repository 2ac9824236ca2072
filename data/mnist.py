"""MNIST and Fashion-MNIST from their four IDX files, with the fixed splits every command shares.

Images stay uint8 (N, 28, 28) in memory; labels are int64. Files may be gzipped or not.
"""

import gzip
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from data.errors import InputError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
DEFAULT_DIRS = {
    "mnist": Path(__file__).resolve().parent / "mnist",
    "fashion": Path("/usr/share/datasets/fashion-mnist"),
}
VAL_SIZE = 5000  # the fixed validation split carved from train
SPLIT_SEED = 0  # never changes: every run, every command sees the same validation images


@dataclass(frozen=True)
class Digits:
    """A labelled image set: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "Digits":
        return Digits(self.images[idx], self.labels[idx])


def data_dir(dataset: str = "mnist", folder: str | Path | None = None) -> Path:
    """The folder to read: the explicit one, else $DIGITGEN_DATA_DIR (MNIST only), else the default."""
    if dataset not in DEFAULT_DIRS:
        raise InputError(f"unknown dataset {dataset!r}: choose one of {', '.join(DEFAULT_DIRS)}")
    if folder is None and dataset == "mnist":
        folder = os.environ.get("DIGITGEN_DATA_DIR")
    return Path(folder) if folder else DEFAULT_DIRS[dataset]


def load(split: str = "train", dataset: str = "mnist", folder: str | Path | None = None) -> Digits:
    """Load one split, downloading the files first if they are absent and the network allows."""
    if split not in FILES:
        raise InputError(f"unknown split {split!r}: choose train or test")
    return _load(split, dataset, data_dir(dataset, folder).resolve())


@lru_cache(maxsize=8)
def _load(split: str, dataset: str, folder: Path) -> Digits:
    image_name, label_name = FILES[split]
    images = _read_idx(_find_or_download(folder, image_name, dataset), IMAGES_MAGIC)
    labels = _read_idx(_find_or_download(folder, label_name, dataset), LABELS_MAGIC)
    if len(images) != len(labels):
        raise InputError(f"{folder}: {image_name} holds {len(images)} images but {label_name} {len(labels)} labels")
    if labels.max() > 9:
        raise InputError(f"{folder / label_name}: label {labels.max()} is out of range 0..9")
    return Digits(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _find_or_download(folder: Path, name: str, dataset: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    _download(folder, dataset)
    return folder / f"{name}.gz"


def _download(folder: Path, dataset: str) -> None:
    """torchvision's mirrors and checksums; without network, say exactly which files to place where."""
    from torchvision.datasets import MNIST, FashionMNIST
    from torchvision.datasets.utils import download_url

    source = {"mnist": MNIST, "fashion": FashionMNIST}[dataset]
    try:
        for filename, md5 in source.resources:
            if (folder / filename).is_file() or (folder / filename.removesuffix(".gz")).is_file():
                continue
            for mirror in source.mirrors:
                try:
                    download_url(mirror + filename, str(folder), filename=filename, md5=md5)
                    break
                except Exception:
                    if mirror == source.mirrors[-1]:
                        raise
    except Exception as e:
        names = ", ".join(f for f, _ in source.resources)
        raise InputError(
            f"{dataset} files are missing in {folder} and the download failed ({type(e).__name__}): "
            f"place {names} there (gzipped or not), or point --data-dir at them"
        ) from None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse and validate an IDX file: magic number, 28x28 images, and the payload length."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    dims = 3 if magic == IMAGES_MAGIC else 1
    header_size = 4 * (1 + dims)
    if len(raw) < header_size:
        raise InputError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    header = np.frombuffer(raw, ">u4", count=1 + dims)
    if header[0] != magic:
        raise InputError(f"{path}: magic number {header[0]}, expected {magic}; not an IDX file of this kind")
    shape = tuple(int(d) for d in header[1:])
    if dims == 3 and shape[1:] != (28, 28):
        raise InputError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    expected = header_size + int(np.prod(shape))
    if len(raw) != expected:
        raise InputError(f"{path}: {len(raw)} bytes, header promises {expected}; truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(shape).copy()


def validation_split(labels: torch.Tensor, size: int = VAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, class-balanced validation split: (training pool indices, validation indices)."""
    if not 0 <= size < len(labels):
        raise InputError(f"validation size {size} must be in 0..{len(labels) - 1}")
    everything = torch.arange(len(labels))
    if size == 0:
        return everything, everything[:0]
    val = balanced_subset(labels, everything, size, SPLIT_SEED)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return everything[keep], val


def balanced_subset(labels: torch.Tensor, pool: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n indices from pool, seeded, as class-balanced as the pool allows (sorted)."""
    if not 0 < n <= len(pool):
        raise InputError(f"asked for {n} labelled images; the pool holds {len(pool)} (choose 1..{len(pool)})")
    if n == len(pool):
        return pool.sort().values
    shuffled = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    by_class = [shuffled[labels[shuffled] == c] for c in range(10)]
    chosen, remaining = [], n
    # Rarest classes first: a class too small for its share gives its shortfall to the others.
    for left, c in enumerate(sorted(range(10), key=lambda c: (len(by_class[c]), c))):
        take = min(len(by_class[c]), -(-remaining // (10 - left)))
        chosen.append(by_class[c][:take])
        remaining -= take
    return torch.cat(chosen).sort().values


def labelled_subset(labels: torch.Tensor, n: int, seed: int, val_size: int = VAL_SIZE) -> torch.Tensor:
    """The seeded, class-balanced labelled training subset of size n, never touching validation."""
    pool, _ = validation_split(labels, val_size)
    return balanced_subset(labels, pool, n, seed)
