import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import synthetic_attrs, write_synthetic
from data.errors import InputError
from data.synthetic import FORMAT, SyntheticDataset, SyntheticWriter, load_synthetic, summary

ROOT = Path(__file__).resolve().parents[1]


def random_batch(rng, n, nz=8):
    probs = rng.dirichlet(np.ones(10), n).astype(np.float32)
    return dict(images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=probs.argmax(1).astype(np.uint8),
                confidence=probs.max(1), probs=probs, latents=rng.standard_normal((n, nz)).astype(np.float32),
                condition=rng.integers(0, 10, n).astype(np.int16))


def test_written_file_reads_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, n) for n in (700, 1500, 3)]
    path = tmp_path / "out.h5"
    with SyntheticWriter(path, synthetic_attrs(), nz=8, conditional=True) as w:
        for b in batches:
            w.append(**b)
    whole = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    back = load_synthetic(path)
    assert np.array_equal(back.images.numpy(), whole["images"])
    assert np.array_equal(back.labels.numpy(), whole["labels"])
    assert np.array_equal(back.confidence.numpy(), whole["confidence"])
    assert np.array_equal(back.probs.numpy(), whole["probs"].astype(np.float16).astype(np.float32))
    with h5py.File(path) as f:
        assert np.array_equal(f["latents"][:], whole["latents"]) and np.array_equal(f["condition"][:], whole["condition"])
        assert f["images"].compression == "gzip" and f["images"].chunks[1:] == (28, 28)
        assert f["probs"].dtype == np.float16
    attrs = back.attrs
    assert attrs["format"] == FORMAT and attrs["format_version"] == 1 and attrs["seed"] == 7
    assert attrs["config"] == {"n": 1} and attrs["created"].startswith("20") and attrs["tool_version"]
    assert attrs["class_counts"] == {str(c): int((whole["labels"] == c).sum()) for c in range(10)}
    assert summary(path)["class_counts"] == list(attrs["class_counts"].values())
    assert os.listdir(tmp_path) == ["out.h5"]


def test_failure_inside_writer_leaves_nothing(tmp_path):
    path = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with SyntheticWriter(path, synthetic_attrs()) as w:
            b = random_batch(np.random.default_rng(0), 10)
            w.append(b["images"], b["labels"], b["confidence"], b["probs"])
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []


def test_killed_writer_never_leaves_a_file_under_the_final_name(tmp_path):
    path = tmp_path / "out.h5"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from conftest import synthetic_attrs
        from data.synthetic import SyntheticWriter
        w = SyntheticWriter({str(path)!r}, synthetic_attrs())
        w.append(np.zeros((50, 28, 28), np.uint8), np.zeros(50, np.uint8), np.ones(50, np.float32), np.ones((50, 10)))
        print("appended", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "appended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not path.exists()
    with pytest.raises(InputError, match="no such file"):
        load_synthetic(path)


def test_existing_file_is_kept_until_the_new_one_is_complete(tmp_path, test_digits):
    path = write_synthetic(tmp_path / "out.h5", test_digits.subset(np.arange(10)))
    with pytest.raises(InputError, match="already exists: pass --overwrite"):
        SyntheticWriter(path, synthetic_attrs())
    with pytest.raises(RuntimeError):
        with SyntheticWriter(path, synthetic_attrs(), overwrite=True) as w:
            w.append(*(lambda b: (b["images"], b["labels"], b["confidence"], b["probs"]))(random_batch(np.random.default_rng(1), 99)))
            assert len(load_synthetic(path)) == 10
            raise RuntimeError("crash")
    assert len(load_synthetic(path)) == 10
    write_synthetic(path, test_digits.subset(np.arange(20)), overwrite=True)
    assert len(load_synthetic(path)) == 20


def corrupt(path):
    path.write_bytes(b"not hdf5 at all" * 100)


def foreign(path):
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 28, 28), np.uint8)


def wrong_version(path):
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2


def short_labels(path):
    with h5py.File(path, "a") as f:
        del f["labels"]
        f["labels"] = np.zeros(5, np.uint8)


def wrong_dtype(path):
    with h5py.File(path, "a") as f:
        del f["images"]
        f["images"] = np.zeros((10, 28, 28), np.float32)


def truncated(path):
    path.write_bytes(path.read_bytes()[:3000])


@pytest.mark.parametrize("damage, expected", [
    (corrupt, "not an HDF5 file"), (foreign, "not a digitgen-synthetic file"), (wrong_version, "format version 2"),
    (short_labels, "/labels holds 5 rows"), (wrong_dtype, "/images is float32"), (truncated, "HDF5"),
])
def test_bad_files_are_refused_with_their_path(tmp_path, test_digits, damage, expected):
    path = write_synthetic(tmp_path / "bad.h5", test_digits.subset(np.arange(10)))
    damage(path)
    for read in (load_synthetic, summary, SyntheticDataset):
        with pytest.raises(InputError, match=expected) as e:
            read(path)
        assert str(path) in str(e.value)


def test_dataset_reads_lazily_in_dataloader_workers(synthetic_file):
    dataset = SyntheticDataset(synthetic_file)
    assert dataset.file is None and len(dataset) == 2000
    loader = torch.utils.data.DataLoader(dataset, batch_size=500, num_workers=2)
    images, labels = map(torch.cat, zip(*loader))
    whole = load_synthetic(synthetic_file)
    assert torch.equal(images, whole.images) and torch.equal(labels, whole.labels)
