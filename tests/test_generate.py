import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from augment import explore, pipeline, quality, trainer
from augment.checkpoint import BUNDLED, BUNDLED_CONDITIONAL, load_generator
from augment.models import GanSpec
from classifier import checkpoint, mixing
from augment.selection import Selection
from classifier.checkpoint import REFERENCE, load_reference
from classifier.train import TrainConfig, fit, predict_proba
from cli import app
from data.files import sha256_of
from data.pixels import to_uint8
from data.errors import InputError
from data.synthetic import load_synthetic

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(tmp_path_factory, train):
    """A briefly trained generator of each kind and a small labeller: real checkpoints, real files."""
    folder = tmp_path_factory.mktemp("models")
    digits = train.subset(torch.arange(512))
    paths = {}
    for name, conditional in (("plain", False), ("conditional", True)):
        config = trainer.GanConfig(spec=GanSpec(nz=16, g_width=16, d_width=16, conditional=conditional), epochs=1, batch_size=64,
                                   eval_every=0)
        trainer.train(trainer.start(folder / name, config, digits, False), progress=False)
        paths[name] = folder / name / "generator.pt"
    labeller, _ = fit(mixing.build(train, 1000, seed=0).train, TrainConfig(epochs=1, min_steps=100), progress=False)
    paths["labeller"] = folder / "labeller.pt"
    checkpoint.save(paths["labeller"], labeller, {}, {})
    return paths


def columns(path):
    with h5py.File(path) as f:
        return {k: f[k][:] for k in f}


def test_generate_writes_a_valid_file_reproducibly(tmp_path, models):
    args = ["generate", "--generator", models["plain"], "--labeller", models["labeller"], "--n", 300,
            "--min-confidence", 0.3, "--batch-size", 128, "--save-latents", "--seed", 4]
    first = run(*args, "--out", tmp_path / "a.h5")
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output and "images/s written" in first.output and "class histogram" in first.output
    run(*args, "--out", tmp_path / "b.h5")
    a, b = columns(tmp_path / "a.h5"), columns(tmp_path / "b.h5")
    assert a.keys() == b.keys() == {"images", "labels", "confidence", "probs", "latents"}
    assert all(np.array_equal(a[k], b[k]) for k in a) and len(a["labels"]) == 300
    assert (a["confidence"] >= 0.3).all() and np.array_equal(a["labels"], a["probs"].astype(np.float32).argmax(1))
    data = load_synthetic(tmp_path / "a.h5")
    assert data.attrs["generator_sha256"] == sha256_of(models["plain"])
    assert data.attrs["labeller_sha256"] == sha256_of(models["labeller"])
    assert data.attrs["seed"] == 4 and data.attrs["config"]["n"] == 300 and data.attrs["dataset"] == "mnist"
    # The latents really drew the images.
    g, _ = load_generator(models["plain"])
    with torch.inference_mode():
        redrawn = to_uint8(g(torch.from_numpy(a["latents"][:5])))
    assert np.abs(redrawn.numpy().astype(int) - a["images"][:5]).max() <= 1


def test_the_bundled_generator_draws_digits_the_reference_classifier_is_sure_of(tmp_path):
    result = run("generate", "--labeller", REFERENCE, "--n", 500, "--min-confidence", 0, "--out", tmp_path / "b.h5")
    assert result.exit_code == 0, result.output
    data = load_synthetic(tmp_path / "b.h5")
    assert data.attrs["generator_sha256"] == sha256_of(BUNDLED)
    # Measured on 10,000 samples: 97.6% at confidence >= 0.9, every class present.
    assert (data.confidence >= 0.9).float().mean() > 0.9 and len(data.labels.unique()) == 10


def test_balance_asks_the_bundled_conditional_generator_for_classes(tmp_path):
    result = run("generate", "--balance", "--n", 500, "--out", tmp_path / "bal.h5")
    assert result.exit_code == 0, result.output
    data = load_synthetic(tmp_path / "bal.h5")
    assert data.attrs["generator_sha256"] == sha256_of(BUNDLED_CONDITIONAL)
    assert torch.bincount(data.labels, minlength=10).tolist() == [50] * 10
    drawn = int(re.search(r"kept 500 of ([\d,]+) drawn", result.output).group(1).replace(",", ""))
    assert drawn <= 1000  # asked for classes, not rejected: one batch of 1,000 draws suffices


def test_conditional_generator_stores_the_requested_class(tmp_path, models):
    result = run("generate", "--generator", models["conditional"], "--labeller", models["labeller"], "--n", 200,
                 "--min-confidence", 0, "--out", tmp_path / "c.h5")
    assert result.exit_code == 0, result.output
    assert "the labeller agrees with the requested class on" in result.output
    assert "kept 200 of 1,000 drawn; 100.0% of them passed confidence >= 0.0" in result.output  # one whole batch
    c = columns(tmp_path / "c.h5")
    assert c["condition"].dtype == np.int16 and set(np.unique(c["condition"])) == set(range(10))


def test_realism_and_agreement_filters_keep_only_samples_that_pass(tmp_path, models, train):
    second, _ = fit(mixing.build(train, 1000, seed=1).train, TrainConfig(epochs=1, min_steps=100, seed=1), progress=False)
    checkpoint.save(tmp_path / "second.pt", second, {}, {})
    args = ["generate", "--labeller", REFERENCE, "--n", 300, "--min-confidence", 0.5, "--seed", 2]
    plain = run(*args, "--out", tmp_path / "plain.h5")
    kept = run(*args, "--min-realism", 1, "--agree", tmp_path / "second.pt", "--out", tmp_path / "kept.h5")
    assert plain.exit_code == 0 and kept.exit_code == 0, kept.output
    passed = lambda out: float(re.search(r"drawn; ([\d.]+)% of them passed", out).group(1))  # noqa: E731
    assert passed(kept.output) < passed(plain.output)  # the filters reject draws that confidence alone keeps
    failed = {k: int(v.replace(",", "")) for k, v in re.findall(r"(confidence|realism|agreement) ([\d,]+)", kept.output.split("failing")[1])}
    assert failed["realism"] > 0 and failed["agreement"] > 0
    data = load_synthetic(tmp_path / "kept.h5")
    assert (predict_proba(second, data.images).argmax(1) == data.labels).all()
    reference = load_reference()
    selection = Selection(min_realism=1, real=train)
    real_scores = quality.realism(selection.manifold, quality.embed(reference, data.images)[0])
    assert (real_scores >= 1).all() and data.attrs["config"]["min_realism"] == 1
    assert data.attrs["config"]["agree_sha256"] == sha256_of(tmp_path / "second.pt")
    refused = run(*args, "--agree", REFERENCE, "--out", tmp_path / "x.h5")
    assert refused.exit_code == 2 and "independent of the labeller" in refused.output


@pytest.mark.parametrize("merge", ["vds", "copy"])
def test_two_processes_write_the_file_one_process_writes(tmp_path, models, merge):
    args = ["generate", "--generator", models["conditional"], "--labeller", models["labeller"], "--n", 300,
            "--min-confidence", 0.3, "--batch-size", 64, "--save-latents", "--device", "cpu"]
    one = run(*args, "--out", tmp_path / "one.h5")
    assert one.exit_code == 0, one.output
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--", "cli.py",
                          *map(str, args), "--merge", merge, "--out", str(tmp_path / "two.h5")],
                         cwd=ROOT, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.startswith(f"wrote {tmp_path / 'two.h5'}: 300 images, ")  # once: process 0 reports
    assert two.stdout.splitlines()[1:] == one.output.splitlines()[1:]  # the same draws, kept and counted once
    a, b = columns(tmp_path / "one.h5"), columns(tmp_path / "two.h5")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    shards = sorted(p.name for p in tmp_path.glob("two-shard*"))
    assert shards == ([] if merge == "copy" else ["two-shard0-of-2.h5", "two-shard1-of-2.h5"])
    if merge == "vds":  # its rows live in the shards: without one, the file is refused, not read short
        (tmp_path / shards[1]).unlink()
        with pytest.raises(InputError, match="that is not a file beside it"):
            load_synthetic(tmp_path / "two.h5")


def test_balance_quotas_are_kept_in_drawing_order():
    config = pipeline.GenerateConfig(n=25, balance=True)
    assert pipeline.targets(config).tolist() == [3] * 5 + [2] * 5
    labels = torch.tensor([1, 1, 1, 2, 1, 2])
    keep = torch.tensor([True, False, True, True, True, True])
    room = np.array([0, 2, 1, 0, 0, 0, 0, 0, 0, 0])
    assert pipeline._within_quota(labels, keep, room).tolist() == [True, True, True, True, False, False]


def test_rare_classes_give_a_clear_message_and_no_file(tmp_path, models):
    out = tmp_path / "bal.h5"
    result = run("generate", "--generator", models["plain"], "--labeller", models["labeller"], "--n", 50,
                 "--balance", "--min-confidence", 0.999, "--batch-size", 100, "--out", out)
    assert result.exit_code == 2 and result.output.startswith("error: classes too rare at confidence >= 0.999")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # A hopeless pass rate is known long before the budget (50 draws per image asked for, 50 million here) is spent.
    result = run("generate", "--generator", models["plain"], "--labeller", models["labeller"], "--n", 1_000_000,
                 "--min-confidence", 0.999999, "--out", out)
    assert result.exit_code == 2 and f"after drawing {pipeline.FORESIGHT:,}, too few" in result.output, result.output


@pytest.mark.parametrize("args, expected", [
    (["--min-confidence", 1.5], "min-confidence must be in 0..1"),
    (["--digit", 3], "--digit needs a conditional generator"),
    (["--generator", "LABELLER"], "is a 'digitgen-classifier' checkpoint, expected 'digitgen-generator'"),
    (["--labeller", "FASHION"], "a classifier of 'fashion' images, but the generator draws 'mnist' ones"),
])
def test_generate_refuses_bad_input(tmp_path, models, args, expected):
    fashion = tmp_path / "fashion.pt"
    checkpoint.save(fashion, checkpoint.load(models["labeller"])[0], {"dataset": "fashion"}, {})
    args = [{"LABELLER": models["labeller"], "FASHION": fashion}.get(a, a) for a in args]
    base = {"--generator": models["plain"], "--labeller": models["labeller"], "--out": tmp_path / "x.h5"}
    for a, v in zip(args[::2], args[1::2]):
        base[a] = v
    result = run("generate", "--n", 10, *[x for kv in base.items() for x in kv])
    assert result.exit_code == 2 and expected in result.output and result.output.count("\n") == 1


def test_too_little_free_space_is_refused_before_drawing(tmp_path, models, monkeypatch):
    monkeypatch.setattr("augment.pipeline.shutil.disk_usage", lambda path: SimpleNamespace(free=5_000_000))
    result = run("generate", "--generator", models["plain"], "--labeller", models["labeller"], "--n", 100_000,
                 "--out", tmp_path / "x.h5")
    assert result.exit_code == 2 and "100,000 images need about 40 MB, 5 MB free" in result.output
    assert list(tmp_path.iterdir()) == []


def test_slerp_ends_at_its_endpoints_and_keeps_the_norm():
    a, b = explore.latents(32, [1, 2])
    path = explore.slerp(a[None], b[None], torch.linspace(0, 1, 7))[0]
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    norms = path.norm(dim=1)
    assert norms.min() > 0.9 * min(a.norm(), b.norm())  # a straight line would dip towards the origin


def test_interpolate_draws_grids_and_gifs(tmp_path, models):
    result = run("interpolate", "--out", tmp_path / "i.png", "--rows", 3, "--steps", 5)  # the bundled generator
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "i.png").size == (2 * (5 * 30 + 2), 2 * (3 * 30 + 2))
    result = run("interpolate", "--generator", models["plain"], "--out", tmp_path / "i.gif", "--seeds", "1,2,3", "--steps", 4)
    assert result.exit_code == 0 and Image.open(tmp_path / "i.gif").n_frames == 1 + 2 * 3
    result = run("interpolate", "--generator", models["conditional"], "--out", tmp_path / "d.png", "--digit-grid", "--rows", 4)
    assert result.exit_code == 0 and Image.open(tmp_path / "d.png").size == (2 * 302, 2 * (4 * 30 + 2))
    refused = run("interpolate", "--generator", models["plain"], "--out", tmp_path / "e.png", "--digit-grid")
    assert refused.exit_code == 2 and "need a conditional generator" in refused.output


def test_show_draws_a_row_per_class(tmp_path, synthetic_file):
    result = run("show", synthetic_file, "--per-class", 8)
    png = synthetic_file.with_suffix(".png")
    assert result.exit_code == 0, result.output
    assert Image.open(png).size == (2 * (24 + 8 * 32), 10 * 2 * 32)
    again = run("show", synthetic_file)
    assert again.exit_code == 2 and "already exists" in again.output
