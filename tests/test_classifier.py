import json

import pytest
import torch

from classifier import checkpoint, mixing
from classifier.affine import random_affine
from classifier.model import DigitCNN
from classifier.train import TrainConfig, batched, evaluate, fit, predict_proba
from data.errors import InputError
from data.files import sha256_of
from data.pixels import to_model

QUICK = TrainConfig(epochs=2, batch_size=64, min_steps=60, seed=3)


@pytest.fixture(scope="module")
def small(train, test_digits):
    mix = mixing.build(train, 500, seed=0)
    return mix.train, test_digits.subset(torch.arange(1000))


def test_training_learns_and_is_reproducible(small):
    train, test = small
    a, history = fit(train, QUICK, test, progress=False)
    b, _ = fit(train, QUICK, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert evaluate(a, test) == evaluate(b, test) > 0.75
    assert [row["epoch"] for row in history] == [1, 2] and history[-1]["step"] == 60
    c, _ = fit(train, TrainConfig(**{**QUICK.__dict__, "seed": 4}), progress=False)
    assert not torch.equal(a.head[1].weight, c.head[1].weight)


def test_predict_proba_and_features(small):
    model, test = DigitCNN().eval(), small[1]
    probs = predict_proba(model, test.images[:300])
    assert probs.shape == (300, 10) and torch.allclose(probs.sum(1), torch.ones(300), atol=1e-5)
    feats = batched(model.features, test.images[:300], batch=128)  # three batches, the last one short
    with torch.inference_mode():
        assert torch.allclose(feats, model.features(to_model(test.images[:300])), atol=1e-5)
    assert feats.shape == (300, DigitCNN.feature_dim) and batched(model.features, test.images[:0]).numel() == 0


def test_bad_training_options_are_refused(small):
    for bad in ({"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"augment": "mixup"}):
        with pytest.raises(InputError):
            fit(small[0], TrainConfig(**bad), progress=False)


def test_random_affine_warps_each_image_and_keeps_background(test_digits):
    x = to_model(test_digits.images[:64])
    g = torch.Generator().manual_seed(0)
    y = random_affine(x, g)
    assert y.shape == x.shape and y.min() >= -1.0001 and y.max() <= 1.0001
    assert torch.allclose(random_affine(torch.full((2, 1, 28, 28), -1.0), g), torch.tensor(-1.0))
    moved = (y - x).abs().mean((1, 2, 3))
    assert (moved > 0.01).all() and moved.std() > 0  # every image changed, each by its own amount
    same = random_affine(x, g, degrees=0, shift=0, scale=0, shear=0)
    assert torch.allclose(same, x, atol=1e-4)


def test_checkpoint_round_trip_and_refusals(tmp_path, small):
    model, _ = fit(small[0], TrainConfig(epochs=1, min_steps=5), progress=False)
    path = tmp_path / "c.pt"
    digest = checkpoint.save(path, model, {"seed": 0}, {"test_accuracy": 0.5})
    loaded, payload = checkpoint.load(path)
    images = small[1].images[:200]
    assert torch.equal(predict_proba(loaded, images), predict_proba(model, images))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == digest == sha256_of(path) and payload["config"] == {"seed": 0}

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        checkpoint.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"kind": "digitgen-gan"}, other)
    with pytest.raises(InputError, match="'digitgen-gan' checkpoint"):
        checkpoint.load(other)
    torch.save({**payload, "arch": "resnet"}, other)
    with pytest.raises(InputError, match="architecture 'resnet'"):
        checkpoint.load(other)
    del payload["state_dict"]["head.1.weight"]
    torch.save(payload, other)
    with pytest.raises(InputError, match="weights do not fit"):
        checkpoint.load(other)
    with pytest.raises(InputError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "absent.pt")


def test_mixing_adds_synthetic_at_the_ratio(train, synthetic_file):
    mix = mixing.build(train, 100, seed=1, synthetic=synthetic_file, ratio=2.0)
    assert (mix.n_real, mix.n_synthetic, len(mix.train)) == (100, 200, 300)
    assert train.labels[:0].dtype == mix.train.labels.dtype and mix.train.images.dtype == torch.uint8
    assert len(mix.val) == 5000
    default = mixing.build(train, 100, seed=1, synthetic=synthetic_file)
    assert default.n_synthetic == 100 and default.ratio == 1.0
    other_seed = mixing.build(train, 100, seed=2, synthetic=synthetic_file, ratio=2.0)
    assert not torch.equal(mix.train.images[100:], other_seed.train.images[100:])
    assert len(mixing.build(train, None, seed=0, val_size=0).train) == 60000


@pytest.mark.parametrize("kwargs, expected", [
    ({"ratio": 1.0}, "--ratio needs --synthetic"),
    ({"n_real": 60000}, "is every label, validation too"),
    ({"ratio": -1.0, "synthetic": "SYN"}, "ratio must be in 0..100"),
    ({"ratio": 30.0, "synthetic": "SYN"}, "only 2,000 images; ratio 30 x 100 real needs 3,000"),
])
def test_mixing_refuses_bad_requests(train, synthetic_file, kwargs, expected):
    if kwargs.get("synthetic") == "SYN":
        kwargs["synthetic"] = synthetic_file
    with pytest.raises(InputError, match=expected):
        mixing.build(train, **{"n_real": 100, **kwargs}, seed=0)
