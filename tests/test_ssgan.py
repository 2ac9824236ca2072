import json
import re

import pytest
import torch
from typer.testing import CliRunner

from augment.checkpoint import BUNDLED, BUNDLED_CONDITIONAL, load_generator
from augment.ssgan import discriminator_loss, fit_discriminator
from classifier.train import evaluate
from cli import app
from data import mnist
from data.errors import InputError
from data.synthetic import load_synthetic


def test_the_discriminator_learns_the_digits_seeded_and_leaves_the_generator_alone(train, test_digits):
    g, _ = load_generator(BUNDLED)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    real = train.subset(mnist.labelled_subset(train.labels, 100, 0))
    unlabelled = train.images[:5000]
    d = fit_discriminator(real, unlabelled, g, 60, seed=0)
    assert not d.training and evaluate(d, test_digits.subset(torch.arange(1000))) > 0.5  # chance is 0.1
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    once, twice = (fit_discriminator(real, unlabelled, g, 3, seed=1).state_dict() for _ in range(2))
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_a_conditional_generator_is_refused(train):
    g, _ = load_generator(BUNDLED_CONDITIONAL)
    with pytest.raises(InputError, match="needs an unconditional generator"):
        fit_discriminator(train.subset(torch.arange(10)), train.images[:100], g, 1, seed=0)


def test_the_loss_reads_the_logits_as_eleven_classes():
    zeros = torch.zeros(4, 10)  # Z = 10: P(real) = 10 / 11, and each digit 1 / 10 of it
    loss = discriminator_loss(zeros, torch.tensor([0, 1, 2, 3]), zeros, zeros)
    expected = torch.log(torch.tensor(10.0)) + 0.5 * (-torch.log(torch.tensor(10 / 11)) - torch.log(torch.tensor(1 / 11)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    sure = torch.full((4, 10), -30.0)  # Z -> 0: generated images sure to be fake cost nothing, real ones a lot
    assert discriminator_loss(zeros, torch.zeros(4, dtype=torch.long), zeros, sure).item() < loss.item()
    assert discriminator_loss(zeros, torch.zeros(4, dtype=torch.long), sure, zeros).item() > 10


def test_the_command_trains_tests_and_saves_a_classifier_that_labels(tmp_path):
    out = tmp_path / "ss.pt"
    done = CliRunner().invoke(app, ["semi-supervised", "--steps", "100", "--rounds", "1", "--round-epochs", "1",
                                    "--out", str(out), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    assert "on 100 labelled + 54,900 unlabelled mnist images" in done.output  # 60,000 less validation and the labels
    test_accuracy, val_accuracy = map(float, re.search(r"test accuracy ([\d.]+) .*validation ([\d.]+)", done.output).groups())
    assert test_accuracy > 0.6 and val_accuracy > 0.6  # 100 steps and a round of 1 epoch: about 0.9; chance is 0.1
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["metrics"]["test_accuracy"] == pytest.approx(test_accuracy, abs=5e-5)
    assert sidecar["config"]["steps"] == 100 and sidecar["config"]["n_unlabelled"] == 54_900
    gan, student = sidecar["metrics"]["history"]
    assert (gan["step"], student["round"], student["epoch"]) == (100, 1, 1) and "discriminator: 100 steps" in done.output
    assert f"self-training round 1: {student['n_unlabelled']:,} unlabelled images labelled at >= 0.9" in done.output
    assert 1_000 < student["n_unlabelled"] < 54_900 and student["val_accuracy"] == pytest.approx(val_accuracy, abs=5e-5)
    labelled = CliRunner().invoke(app, ["generate", "--labeller", str(out), "--n", "50", "--min-confidence", "0",
                                        "--out", str(tmp_path / "s.h5")])
    assert labelled.exit_code == 0, labelled.output
    assert load_synthetic(tmp_path / "s.h5").attrs["labeller_sha256"] == sidecar["sha256"]
    (tmp_path / "afile").write_text("in the way")  # train checks its labeller, then its folder: it gets that far
    conditional = CliRunner().invoke(app, ["train", "--conditional", "--n-real", "100", "--labeller", str(out),
                                           "--out", str(tmp_path / "afile")])
    assert conditional.exit_code == 2 and "afile is a file: --out names the run's folder" in conditional.output
