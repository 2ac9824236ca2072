import os
from pathlib import Path

import numpy as np
import pytest

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
if SHARED_MNIST.is_dir():  # these machines cannot download; elsewhere data/mnist downloads itself
    os.environ.setdefault("DIGITGEN_DATA_DIR", str(SHARED_MNIST))
if "DIGITGEN_DATA_DIR" in os.environ:  # absolute, since some tests run from a tmp dir
    os.environ["DIGITGEN_DATA_DIR"] = str(Path(os.environ["DIGITGEN_DATA_DIR"]).resolve())

from data import mnist  # noqa: E402
from data.synthetic import SyntheticWriter  # noqa: E402


@pytest.fixture(scope="session")
def train():
    return mnist.load("train")


@pytest.fixture(scope="session")
def test_digits():
    return mnist.load("test")


def synthetic_attrs(**overrides):
    attrs = {"dataset": "mnist", "generator_sha256": "0" * 64, "labeller_sha256": "1" * 64, "seed": 7,
             "min_confidence": 0.5, "balance": False, "config": {"n": 1}}
    return {**attrs, **overrides}


def write_synthetic(path, digits, batch=100, **writer_kwargs):
    """An HDF5 synthetic file whose 'synthetic' images are real MNIST digits with one-hot labels."""
    with SyntheticWriter(path, synthetic_attrs(), **writer_kwargs) as w:
        for i in range(0, len(digits), batch):
            labels = digits.labels[i:i + batch].numpy()
            w.append(digits.images[i:i + batch], labels, np.ones(len(labels), np.float32),
                     np.eye(10, dtype=np.float32)[labels])
    return path


@pytest.fixture
def synthetic_file(tmp_path, test_digits):
    return write_synthetic(tmp_path / "synth.h5", test_digits.subset(np.arange(2000)))
