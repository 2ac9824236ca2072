import gzip

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
    with pytest.raises(InputError, match="10000 images but t10k-labels-idx1-ubyte 9999 labels"):
        mnist.load("test", folder=tmp_path)


def test_missing_files_try_download_then_say_what_to_place_where(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils
    from urllib.error import URLError

    tried = []

    def offline(url, *args, **kwargs):
        tried.append(url)
        raise URLError("no network")

    monkeypatch.setattr(tv_utils, "download_url", offline)
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
