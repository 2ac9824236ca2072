import gzip
import time
import tracemalloc

import numpy as np
import pytest
import torch

from data import mnist
from data.errors import InputError


def test_loads_the_standard_splits(train, test_digits):
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test_digits.images.shape == (10000, 28, 28)
    # Published class counts of MNIST train and test.
    assert train.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test_digits.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3


def copy_test_files(src, dst, gunzip=False):
    for name in mnist.FILES["test"]:
        data = gzip.decompress((src / f"{name}.gz").read_bytes())
        (dst / (name if gunzip else f"{name}.gz")).write_bytes(data if gunzip else gzip.compress(data))


def test_plain_and_gzipped_files_read_the_same(tmp_path, test_digits):
    copy_test_files(mnist.data_dir(), tmp_path, gunzip=True)
    plain = mnist.load("test", folder=tmp_path)
    assert torch.equal(plain.images, test_digits.images) and torch.equal(plain.labels, test_digits.labels)


def test_fashion_defaults_to_debian_folder_and_reads_the_same_format(tmp_path, test_digits):
    assert mnist.data_dir("fashion") == mnist.DEFAULT_DIRS["fashion"]
    copy_test_files(mnist.data_dir(), tmp_path)
    assert torch.equal(mnist.load("test", "fashion", tmp_path).labels, test_digits.labels)


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"\x00\x00\x08\x01" + b[4:], "magic number"),
    (lambda b: b[:8] + (14).to_bytes(4, "big") + b[12:], "14x28"),
])
def test_damaged_image_file_is_named(tmp_path, damage, expected):
    copy_test_files(mnist.data_dir(), tmp_path, gunzip=True)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(InputError, match=expected) as e:
        mnist.load("test", folder=tmp_path)
    assert str(images) in str(e.value)


def test_broken_gzip_and_mismatched_counts(tmp_path):
    copy_test_files(mnist.data_dir(), tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.write_bytes(good[:100])
    with pytest.raises(InputError, match="cannot read"):
        mnist.load("test", folder=tmp_path)
    raw = gzip.decompress(good)
    labels.write_bytes(gzip.compress(raw[:4] + (9999).to_bytes(4, "big") + raw[8:-1]))
    with pytest.raises(InputError, match="10000 images but t10k-labels-idx1-ubyte.gz 9999 labels"):
        mnist.load("test", folder=tmp_path)


def test_missing_files_try_download_then_say_what_to_place_where(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils
    from urllib.error import URLError

    tried = []

    def offline(url, *args, **kwargs):
        tried.append(url)
        raise URLError("no network")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(InputError, match="no such folder"):  # a misspelt folder: nothing downloaded, nothing made
        mnist.load("train", folder=tmp_path / "absent")
    assert not tried and not (tmp_path / "absent").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as e:
        mnist.load("train", folder=tmp_path / "empty")
    message = str(e.value)
    assert str(tmp_path / "empty") in message and "download failed" in message
    assert all(name in message for names in mnist.FILES.values() for name in names)
    assert tried and tried[0].endswith("train-images-idx3-ubyte.gz")


def test_validation_split_is_fixed_balanced_and_disjoint(train):
    pool, val = mnist.validation_split(train.labels)
    again, val_again = mnist.validation_split(train.labels)
    assert torch.equal(val, val_again) and torch.equal(pool, again)
    assert len(val) == mnist.VAL_SIZE and len(pool) == 60000 - mnist.VAL_SIZE
    assert train.labels[val].bincount().tolist() == [500] * 10
    assert not set(pool.tolist()) & set(val.tolist())
    everything, none = mnist.validation_split(train.labels, 0)
    assert len(everything) == 60000 and len(none) == 0


def test_labelled_subset_is_seeded_balanced_and_avoids_validation(train):
    a = mnist.labelled_subset(train.labels, 100, seed=1)
    assert train.labels[a].bincount().tolist() == [10] * 10
    assert torch.equal(a, mnist.labelled_subset(train.labels, 100, seed=1))
    assert not torch.equal(a, mnist.labelled_subset(train.labels, 100, seed=2))
    _, val = mnist.validation_split(train.labels)
    assert not set(a.tolist()) & set(val.tolist())
    # Class 5 is the rarest: when it runs short, the others make up the count.
    big = mnist.labelled_subset(train.labels, 50000, seed=0)
    counts = train.labels[big].bincount()
    assert len(big) == 50000 and counts[5] == 5421 - 500 and counts.max() - counts.min() > 0
    with pytest.raises(InputError, match="pool holds 55000"):
        mnist.labelled_subset(train.labels, 55001, seed=0)


# Hostile IDX files: each is an InputError naming the file and the problem, found before any large allocation.

def idx(magic, shape, payload):
    return b"".join(int(x).to_bytes(4, "big") for x in (magic, *shape)) + bytes(payload)


def small_pair(folder, n=100, images=None, labels=None, gz=False):
    """A small IDX image/label pair in the test split's names (the first n test digits), optionally replaced."""
    rng = np.random.default_rng(0)
    images = idx(mnist.IMAGES_MAGIC, (n, 28, 28), rng.integers(0, 256, n * 784, dtype=np.uint8)) if images is None else images
    labels = idx(mnist.LABELS_MAGIC, (n,), rng.integers(0, 10, n, dtype=np.uint8)) if labels is None else labels
    paths = []
    for name, data in zip(mnist.FILES["test"], (images, labels)):
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(data, 1) if gz else data)
        paths.append(path)
    return paths


def read_pair(folder):
    return mnist._load.__wrapped__("test", "mnist", folder)  # uncached: the tests rewrite the same folder


IMAGES, LABELS = mnist.IMAGES_MAGIC, mnist.LABELS_MAGIC
HOSTILE_IDX = [  # (which file, its bytes, the message)
    (0, idx(IMAGES, (0, 28, 28), b""), "holds no images .the header's count is 0."),
    (1, idx(LABELS, (0,), b""), "holds no labels"),
    (0, idx(IMAGES, (100, 28, 28), bytes(100 * 784 - 1)), "78399 bytes of data, header promises 78400; truncated"),
    (0, idx(IMAGES, (100, 28, 28), bytes(100 * 784 + 1)), r"more data than the header declares \(.*78401 bytes"),
    (0, idx(IMAGES, (100, 28, 28), b"")[:10], "too short to be an IDX images file .10 bytes."),
    (0, b"", "too short"),
    (0, idx(LABELS, (100, 28, 28), bytes(100 * 784)), "magic number 2049, expected 2051"),
    (1, idx(0x0D03, (100,), bytes(100)), "magic number 3331, expected 2049"),
    (0, idx(IMAGES, (100, 32, 32), bytes(100 * 1024)), "images are 32x32, expected 28x28"),
    (0, idx(IMAGES, (2**32 - 1, 28, 28), bytes(784)), "declares 4,294,967,295 images, more than the 2,000,000"),
    (0, idx(IMAGES, (99, 28, 28), bytes(99 * 784)), "holds 99 images but t10k-labels-idx1-ubyte(.gz)? 100 labels"),
    (1, idx(LABELS, (100,), bytes(50) + b"\x0a" + bytes(49)), r"label 10 \(item 50\) is out of range 0..9"),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("which, data, expected", HOSTILE_IDX)
def test_hostile_idx_files_are_refused_with_their_name(tmp_path, which, data, expected, gz):
    paths = small_pair(tmp_path, **{("images", "labels")[which]: data}, gz=gz)
    expected = expected.replace("bytes of data", "bytes of data after gunzip") if gz else expected
    with pytest.raises(InputError, match=expected) as e:
        read_pair(tmp_path)
    assert str(e.value).startswith(f"{tmp_path if 'images but' in expected else paths[which]}: ")


def test_a_small_valid_pair_reads_gzipped_or_not_whatever_its_name(tmp_path):
    small_pair(tmp_path)
    plain = read_pair(tmp_path)
    assert plain.images.shape == (100, 28, 28) and plain.labels.dtype == torch.int64
    images, labels = small_pair(tmp_path, gz=True)
    images.rename(images.with_suffix(""))  # gzipped content under the plain name: recognised by its magic bytes
    labels.rename(labels.with_suffix(""))
    again = read_pair(tmp_path)
    assert torch.equal(plain.images, again.images) and torch.equal(plain.labels, again.labels)


def test_gzip_bomb_is_read_only_as_far_as_its_header_declares(tmp_path):
    """A 1 GiB stream of zeros behind a header declaring 1,000 images, in a ~1 MB file: the reader stops after
    the declared 784,000 bytes (plus one) and says so, without decompressing the rest."""
    member = gzip.compress(bytes(16 << 20), 9)  # 16 MiB of zeros, ~16 kB compressed
    bomb = gzip.compress(idx(IMAGES, (1000, 28, 28), b""), 9) + member * 64
    small_pair(tmp_path, n=1000)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    bomb_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    bomb_path.write_bytes(bomb)
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(InputError, match="more data than the header declares") as e:
            read_pair(tmp_path)
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith(str(bomb_path))
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB: decompressed far past the declared size"
    assert seconds < 5


def test_fuzzed_idx_files_load_or_raise_input_error(tmp_path):
    """Seeded byte flips and truncations of a small valid pair, plain and gzipped: each loads or is an InputError."""
    rng = np.random.default_rng(0)
    good = [p.read_bytes() for p in small_pair(tmp_path, n=20)]
    outcomes = {"ok": 0, "InputError": 0}
    for case in range(300):
        gz, which = case % 2 == 1, case // 2 % 2
        data = bytearray(good[which])
        if case % 7 == 0:
            data = data[:rng.integers(0, len(data))]
        else:
            for i in rng.integers(0, min(32, len(data)) if case % 3 else len(data), rng.integers(1, 4)):  # mostly the header
                data[i] = rng.integers(0, 256)
        for p in tmp_path.iterdir():
            p.unlink()
        small_pair(tmp_path, n=20, **{("images", "labels")[which]: bytes(data)}, gz=gz)
        try:
            read_pair(tmp_path)
            outcomes["ok"] += 1
        except InputError as e:
            assert str(e).startswith(str(tmp_path)), e
            outcomes["InputError"] += 1
    assert outcomes["InputError"] > 100 and outcomes["ok"] > 20, outcomes


def test_every_label_means_every_image_and_nothing_else_reaches_validation(train):
    assert torch.equal(mnist.labelled_subset(train.labels, 60000, seed=3), torch.arange(60000))
    with pytest.raises(InputError, match="the pool holds 55000"):
        mnist.labelled_subset(train.labels, 59999, seed=0)
