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
    image_path = _find_or_download(folder, image_name, dataset)
    label_path = _find_or_download(folder, label_name, dataset)
    # Both headers are checked, and the counts compared, before either payload is read.
    with _IdxReader(image_path, IMAGES_MAGIC) as images, _IdxReader(label_path, LABELS_MAGIC) as labels:
        if images.shape[0] != labels.shape[0]:
            raise InputError(f"{folder}: {image_path.name} holds {images.shape[0]} images but {label_path.name} "
                             f"{labels.shape[0]} labels")
        label_values = labels.read()
        if label_values.max() > 9:
            bad = int(np.argmax(label_values > 9))
            raise InputError(f"{label_path}: label {label_values[bad]} (item {bad}) is out of range 0..9")
        image_values = images.read()
    return Digits(torch.from_numpy(image_values), torch.from_numpy(label_values.astype(np.int64)))


def _find_or_download(folder: Path, name: str, dataset: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if not folder.is_dir() and folder != DEFAULT_DIRS[dataset].resolve():  # a misspelt --data-dir is not created
        raise InputError(f"{folder}: no such folder; point --data-dir (or DIGITGEN_DATA_DIR) at the one holding the "
                         f"{dataset} IDX files")
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


MAX_ITEMS = 2_000_000  # 28x28 uint8 images: 1.5 GiB; MNIST train holds 60,000, EMNIST's largest split 700,000
GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK = 1 << 20


class _IdxReader:
    """One IDX file, opened and its header validated; `read()` then reads exactly the payload the header
    declares, never more (a gzip bomb is decompressed only up to that size, plus one byte to detect excess)."""

    def __init__(self, path: Path, magic: int):
        self.path, self.stream = path, None
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        try:
            self.stream = open(path, "rb")
            self.gzipped = self.stream.read(2) == GZIP_MAGIC
            self.stream.seek(0)
            file_size = os.fstat(self.stream.fileno()).st_size
            if self.gzipped:
                self.stream = gzip.GzipFile(fileobj=self.stream, mode="rb")
            dims = 3 if magic == IMAGES_MAGIC else 1
            header_size = 4 * (1 + dims)
            raw = self._read_exactly(header_size)
        except OSError as e:  # cannot open or stat it
            self._fail(f"cannot read ({type(e).__name__}: {e})")
        except BaseException:
            self.close()
            raise
        if len(raw) < header_size:
            self._fail(f"too short to be an IDX {kind} file ({len(raw)} bytes{' after gunzip' if self.gzipped else ''})")
        header = np.frombuffer(raw, ">u4")
        if header[0] != magic:
            self._fail(f"magic number {header[0]}, expected {magic}; not an IDX {kind} file")
        self.shape = tuple(int(d) for d in header[1:])
        if dims == 3 and self.shape[1:] != (28, 28):
            self._fail(f"images are {self.shape[1]}x{self.shape[2]}, expected 28x28")
        if self.shape[0] == 0:
            self._fail(f"holds no {kind} (the header's count is 0)")
        if self.shape[0] > MAX_ITEMS:
            self._fail(f"the header declares {self.shape[0]:,} {kind}, more than the {MAX_ITEMS:,} this tool reads; "
                       f"corrupt or not MNIST-like")
        self.size = int(np.prod(self.shape))
        if not self.gzipped:  # the size is known before anything is read
            self._check_size(file_size - header_size)

    def _check_size(self, found: int) -> None:
        where = " after gunzip" if self.gzipped else ""
        if found < self.size:
            self._fail(f"{found} bytes of data{where}, header promises {self.size}; truncated or corrupt")
        if found > self.size:
            self._fail(f"more data than the header declares ({'at least ' if self.gzipped else ''}{found} bytes of "
                       f"data{where}, header promises {self.size}); corrupt or not an IDX file")

    def read(self) -> np.ndarray:
        """The payload as a writable uint8 array of the header's shape."""
        data = self._read_exactly(self.size)
        self._check_size(len(data) + len(self._read_exactly(1)))  # one byte past: is there more than declared?
        return np.frombuffer(data, np.uint8).reshape(self.shape)

    def _read_exactly(self, n: int) -> bytearray:
        """Up to n bytes (fewer only at the end of the data), in bounded blocks."""
        out = bytearray()
        try:
            while len(out) < n:
                block = self.stream.read(min(READ_BLOCK, n - len(out)))
                if not block:
                    break
                out += block
        except (OSError, EOFError, zlib.error) as e:
            self._fail(f"cannot read ({type(e).__name__}: {e})")
        return out

    def _fail(self, problem: str):
        self.close()
        raise InputError(f"{self.path}: {problem}") from None

    def close(self) -> None:
        if self.stream is not None:
            inner = getattr(self.stream, "fileobj", None)
            self.stream.close()
            if inner is not None:
                inner.close()
            self.stream = None

    def __enter__(self) -> "_IdxReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse and validate one IDX file: magic number, count, 28x28 images, and the payload length."""
    with _IdxReader(path, magic) as reader:
        return reader.read()


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
    """The one labelled-subset rule of every command: n seeded, class-balanced images from the training pool,
    never touching validation; asking for every label (n = all of train) means every image, validation too."""
    if n == len(labels):
        return torch.arange(n)
    pool, _ = validation_split(labels, val_size)
    return balanced_subset(labels, pool, n, seed)


def unlabelled_pool(labels: torch.Tensor, labelled: torch.Tensor, val_size: int = VAL_SIZE) -> torch.Tensor:
    """The training pool less the labelled subset: what semi-supervised training learns from without labels,
    validation held out so that it still measures."""
    pool, _ = validation_split(labels, val_size)
    return pool[~torch.isin(pool, labelled)]
