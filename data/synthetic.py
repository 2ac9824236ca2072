"""The `digitgen-synthetic` HDF5 format, version 1 (see DESIGN.md): writer, reader, torch Dataset.

The writer streams batches into chunked, compressed datasets under a temporary name and renames
the file into place only when it is complete, so the final name never holds a half file.
"""

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np
import torch

from data.errors import InputError, refuse_existing

FORMAT, FORMAT_VERSION = "digitgen-synthetic", 1
CALLER_ATTRS = ("dataset", "generator_sha256", "labeller_sha256", "seed", "min_confidence", "balance", "config")
CHUNK = 1024


def tool_version() -> str:
    try:
        return version("digitgen")
    except PackageNotFoundError:
        return "unknown"


def check_writable(path: Path, overwrite: bool) -> None:
    """Fail before any work if the output exists (and may not be replaced) or its folder is missing."""
    refuse_existing(path, overwrite)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} is not a folder")


class SyntheticWriter:
    """Append batches of labelled digits; `close()` publishes the file, an exception discards it.

    attrs must give the CALLER_ATTRS (config as a dict); the writer adds format, version,
    created, tool_version and class_counts.
    """

    def __init__(self, path: str | Path, attrs: dict, nz: int | None = None,
                 conditional: bool = False, overwrite: bool = False):
        self.path = Path(path)
        missing = [k for k in CALLER_ATTRS if k not in attrs]
        if missing:
            raise ValueError(f"missing attributes: {missing}")
        check_writable(self.path, overwrite)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file = h5py.File(self.tmp, "w")
        self.counts = np.zeros(10, np.int64)
        self.n = 0
        columns = {"images": ("u1", (28, 28)), "labels": ("u1", ()), "confidence": ("f4", ()), "probs": ("f2", (10,))}
        if nz is not None:
            columns["latents"] = ("f4", (nz,))
        if conditional:
            columns["condition"] = ("i2", ())
        for name, (dtype, tail) in columns.items():
            self.file.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                     chunks=(CHUNK, *tail), compression="gzip", compression_opts=4, shuffle=True)
        root = self.file.attrs
        root["format"], root["format_version"] = FORMAT, FORMAT_VERSION
        root["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        root["tool_version"] = tool_version()
        for key in CALLER_ATTRS:
            value = attrs[key]
            root[key] = json.dumps(value) if key == "config" else ("" if value is None else value)

    def append(self, images, labels, confidence, probs, latents=None, condition=None) -> None:
        """Add one batch; arrays or tensors, the same length, in the format's dtypes or castable."""
        batch = {"images": images, "labels": labels, "confidence": confidence, "probs": probs}
        if "latents" in self.file:
            batch["latents"] = latents
        if "condition" in self.file:
            batch["condition"] = condition
        arrays = {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        b = len(arrays["labels"])
        if any(len(a) != b for a in arrays.values()):
            raise ValueError("batch columns differ in length")
        for name, a in arrays.items():
            ds = self.file[name]
            ds.resize(self.n + b, axis=0)
            ds[self.n:] = a
        self.counts += np.bincount(arrays["labels"], minlength=10)
        self.n += b

    def close(self) -> Path:
        """Finish the file and rename it into place."""
        self.file.attrs["class_counts"] = json.dumps({str(c): int(k) for c, k in enumerate(self.counts)})
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "SyntheticWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def _open(path: Path) -> h5py.File:
    """Open and validate: format, version, columns, dtypes, shapes and lengths."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not an HDF5 file (or corrupt)") from None
    try:
        problem = _problem(f)
    except Exception as e:  # a damaged file can fail anywhere inside h5py
        problem = f"unreadable ({e})"
    if problem:
        f.close()
        raise InputError(f"{path}: {problem}")
    return f


def _problem(f: h5py.File) -> str | None:
    kind, fmt_version = (_decode(k, f.attrs.get(k)) for k in ("format", "format_version"))
    if kind != FORMAT:
        return f"not a {FORMAT} file (format attribute is {kind!r})"
    if fmt_version != FORMAT_VERSION:
        return f"format version {fmt_version!r}, this tool reads version {FORMAT_VERSION}"
    expected = {"images": ("u1", (28, 28)), "labels": ("u1", ()), "confidence": ("f4", ()), "probs": ("f2", (10,))}
    if "latents" in f:
        expected["latents"] = ("f4", f["latents"].shape[1:2])
    if "condition" in f:
        expected["condition"] = ("i2", ())
    n = None
    for name, (dtype, tail) in expected.items():
        if name not in f:
            return f"missing dataset /{name}"
        ds = f[name]
        if ds.dtype != np.dtype(dtype) or ds.shape[1:] != tail or (name == "latents" and ds.ndim != 2):
            return f"/{name} is {ds.dtype} {ds.shape}, expected {np.dtype(dtype)} (N, {', '.join(map(str, tail))})"
        if n is None:
            n = ds.shape[0]
        elif ds.shape[0] != n:
            return f"/{name} holds {ds.shape[0]} rows but /images holds {n}"
    return None


@dataclass(frozen=True)
class Synthetic:
    """A synthetic dataset read into memory."""

    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)
    confidence: torch.Tensor  # float32 (N,)
    probs: torch.Tensor  # float32 (N, 10)
    attrs: dict

    def __len__(self) -> int:
        return len(self.labels)


CONFIDENCE_EDGES = (0, 0.5, 0.9, 0.99, 0.999, 1)  # the last bin, [0.999, 1], is closed


def summary(path: str | Path) -> dict:
    """What `info` prints: attributes (JSON decoded), row count, columns, and label and confidence
    statistics computed from the data itself, not trusted from the attributes."""
    with _open(Path(path)) as f:
        labels = f["labels"][:]
        confidence = f["confidence"][:]
        return {
            "attrs": {k: _decode(k, v) for k, v in f.attrs.items()},
            "rows": len(labels),
            "columns": {k: (str(f[k].dtype), f[k].shape) for k in f},
            "class_counts": np.bincount(labels, minlength=10).tolist(),
            "confidence_quantiles": np.quantile(confidence, [0, 0.5, 1]).tolist() if len(labels) else [],
            "confidence_counts": np.histogram(confidence, CONFIDENCE_EDGES)[0].tolist(),
        }


def load_synthetic(path: str | Path, limit: int | None = None) -> Synthetic:
    """The first `limit` rows (all if None) of a valid file, in memory."""
    with _open(Path(path)) as f:
        n = len(f["labels"]) if limit is None else min(limit, len(f["labels"]))
        return Synthetic(
            images=torch.from_numpy(f["images"][:n]),
            labels=torch.from_numpy(f["labels"][:n].astype(np.int64)),
            confidence=torch.from_numpy(f["confidence"][:n]),
            probs=torch.from_numpy(f["probs"][:n].astype(np.float32)),
            attrs={k: _decode(k, v) for k, v in f.attrs.items()},
        )


def _decode(key: str, value):
    if key in ("config", "class_counts"):
        return json.loads(value)
    return value.item() if isinstance(value, np.generic) else value


class SyntheticDataset(torch.utils.data.Dataset):
    """(uint8 image, label) pairs read lazily; each DataLoader worker opens its own handle."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with _open(self.path) as f:
            self.n = len(f["labels"])
        self.file = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        return torch.from_numpy(self.file["images"][i]), int(self.file["labels"][i])

    def __getstate__(self):
        return {**self.__dict__, "file": None}  # h5py handles must not cross process boundaries
