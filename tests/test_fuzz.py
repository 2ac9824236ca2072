"""Property tests of the three readers: a damaged or hostile file gives a valid result or an InputError, never
another exception and never a hang. DIGITGEN_FUZZ_CASES sets the cases per reader (500 here; 10,000 for the long
run in the closing notes)."""

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from augment.checkpoint import load_generator, save_generator
from augment.models import GanSpec, Generator
from conftest import write_synthetic
from data.errors import InputError
from data.mnist import IMAGES_MAGIC, LABELS_MAGIC, Digits, _read_idx
from data.synthetic import load_synthetic

CASES = settings(max_examples=int(os.environ.get("DIGITGEN_FUZZ_CASES", 500)), deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))
SCRATCH = Path(tempfile.mkdtemp(prefix="digitgen-fuzz-"))


def idx_file(magic: int, n: int) -> bytes:
    shape = (n, 28, 28) if magic == IMAGES_MAGIC else (n,)
    header = np.array([magic, *shape], ">u4").tobytes()
    return header + np.random.default_rng(0).integers(0, 256, int(np.prod(shape)), dtype=np.uint8).tobytes()


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """The file with some of: bytes overwritten, a cut, bytes inserted; often near the start, where headers live."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1) | st.integers(0, min(len(data) - 1, 600)))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def written(name: str, data: bytes) -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


IDX = {magic: idx_file(magic, 3) for magic in (IMAGES_MAGIC, LABELS_MAGIC)}


@pytest.mark.filterwarnings("error")  # a warning would be a second line before the error
@CASES
@given(st.sampled_from(sorted(IDX)).flatmap(lambda m: st.tuples(st.just(m), damaged(IDX[m]))), st.booleans())
def test_idx_reader(case, zipped):
    magic, data = case
    path = written("fuzz.idx", gzip.compress(data, mtime=0) if zipped else data)
    try:
        array = _read_idx(path, magic)
    except InputError:
        return
    assert array.dtype == np.uint8 and len(array) > 0 and array.shape[1:] == ((28, 28) if magic == IMAGES_MAGIC else ())
    assert len(data) == 4 * array.ndim + 4 + array.size  # what was read is what the header declared, all of it


@pytest.fixture(scope="module")
def valid_h5(tmp_path_factory):
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8))
    digits = Digits(images, torch.arange(40) % 10)
    return write_synthetic(tmp_path_factory.mktemp("h5") / "synth.h5", digits, batch=16)


@pytest.mark.filterwarnings("error")  # a warning would be a second line before the error
@CASES
@given(data=st.data())
def test_hdf5_reader(valid_h5, data):
    path = written("fuzz.h5", data.draw(damaged(valid_h5.read_bytes())))
    try:
        s = load_synthetic(path)
    except InputError:
        return
    assert len(s.images) == len(s.labels) == len(s.confidence) > 0 and s.images.shape[1:] == (28, 28)
    assert int(s.labels.max()) <= 9 and torch.isfinite(s.confidence).all()


@pytest.fixture(scope="module")
def valid_generator(tmp_path_factory):
    spec = GanSpec(nz=4, g_width=4)
    path = tmp_path_factory.mktemp("g") / "generator.pt"
    save_generator(path, spec, Generator(spec).state_dict(), {"run": {"dataset": "mnist"}, "step": 0})
    return path  # a path, not bytes: a failing case's report stays readable


@pytest.mark.filterwarnings("error")  # a warning would be a second line before the error
@CASES
@given(data=st.data(), with_sidecar=st.booleans())
def test_checkpoint_reader(valid_generator, data, with_sidecar):
    weights, sidecar = valid_generator.read_bytes(), valid_generator.with_suffix(".json").read_text()
    path = written("generator.pt", data.draw(damaged(weights)))
    path.with_suffix(".json").unlink(missing_ok=True)
    if with_sidecar:
        path.with_suffix(".json").write_text(sidecar)
    try:
        g, payload = load_generator(path)
    except InputError:
        return
    assert all(torch.isfinite(t).all() for t in g.state_dict().values() if t.is_floating_point())
    assert not with_sidecar or path.read_bytes() == weights  # the recorded sha256 lets no changed byte through
