import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augment import quality
from classifier.checkpoint import load_reference
from cli import app
from conftest import write_synthetic

runner = CliRunner()


def gaussian(n, d=16, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + shift


def fid_by_eigenvalues(a, b):
    """FID computed independently: tr sqrt(S1 S2) as the sum of square roots of the eigenvalues of the
    symmetric sqrt(S1) S2 sqrt(S1), with sqrt(S1) from an eigendecomposition."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum()


def test_fid_matches_an_independent_computation():
    a, b = gaussian(3000, seed=1), gaussian(2000, shift=0.3, seed=2)
    assert quality.fid(a, b) == pytest.approx(fid_by_eigenvalues(a, b), rel=1e-6)
    assert quality.fid(a, a) == pytest.approx(0, abs=1e-6)
    # A pure shift by 1 in each of 16 dimensions adds exactly 16.
    assert quality.fid(a, a + 1) == pytest.approx(16, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_distance():
    a, b = gaussian(2000, seed=1), gaussian(2000, seed=1)[::-1] + 0  # same points, other order
    same, _ = quality.kid(a, b, subsets=20, subset_size=500)
    near, _ = quality.kid(a, gaussian(2000, shift=0.2, seed=3), subsets=20, subset_size=500)
    far, _ = quality.kid(a, gaussian(2000, shift=1.0, seed=3), subsets=20, subset_size=500)
    assert abs(same) < near < far


def test_precision_recall_see_fidelity_and_coverage_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 8)) * 10
    real = np.concatenate([c + rng.normal(size=(200, 8)) for c in centres])
    collapsed = centres[0] + rng.normal(size=(2000, 8))  # good images of one mode only
    p, r = quality.precision_recall(real, collapsed)
    assert p > 0.8 and r < 0.2
    p, r = quality.precision_recall(real, real + 100)  # nothing like the real data
    assert p == 0 and r == 0
    p, r = quality.precision_recall(real, real.copy())
    assert p == 1 and r == 1


def test_realism_scores_core_points_high_and_off_manifold_points_low():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 8))
    core, edge, far = np.zeros((1, 8)), np.full((1, 8), 1.2), np.full((1, 8), 20.0)
    scores = quality.realism(quality.real_manifold(real, torch.zeros(2000)), np.concatenate([core, edge, far]))
    assert scores[0] > 1 > scores[2] and scores[0] > scores[1] > scores[2] and scores[2] < 0.2
    # Two classes, one spread four times wider: per-class halves keep a core of each, so samples near
    # the wide class's centre still score as real.
    wide = rng.normal(size=(2000, 8)) * 4 + 30
    manifold = quality.real_manifold(np.concatenate([real, wide]), torch.tensor([0] * 2000 + [1] * 2000))
    assert (quality.realism(manifold, np.full((1, 8), 30.0)) > 1).all()
    assert 2000 <= len(manifold[0]) <= 2002 and (manifold[0][:, 0] > 15).sum() >= 1000  # half of each class


def test_label_entropy():
    assert quality.label_distribution(np.arange(1000) % 10)[1] == pytest.approx(np.log2(10))
    shares, entropy = quality.label_distribution(np.full(50, 3))
    assert entropy == 0 and shares[3] == 1


def test_real_images_score_near_the_floor_and_noise_far_from_it(train, test_digits):
    reference = load_reference()
    real = train.subset(torch.arange(1000))  # unseen by the test set, as a perfect generator's samples would be
    noise = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    good = quality.measure(real.images, real.labels, test_digits, reference, cas_config=None)
    bad = quality.measure(noise, None, test_digits, reference, cas_config=None)
    # Measured: real FID 13.7 (small-sample bias; 3.4 at n = 10,000), noise 1,483.
    assert good.fid < 25 < 500 < bad.fid and good.precision > 0.8 > 0.1 > bad.precision
    assert good.recall > 0.8 > 0.1 > bad.recall and good.kid < bad.kid / 100
    assert good.label_entropy_bits > 3.2 and good.cas is None


def test_evaluate_cli_prints_every_metric_beside_the_floor(tmp_path, test_digits):
    file = write_synthetic(tmp_path / "real.h5", test_digits.subset(torch.arange(600)))
    result = runner.invoke(app, ["evaluate", str(file), "--n", "500", "--no-cas", "--out", str(tmp_path / "q.json")])
    assert result.exit_code == 0, result.output
    for name in ("FID", "KID", "precision", "recall", "label entropy (bits)", "CAS", "real floor"):
        assert name in result.output
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["samples"]["n"] == saved["floor"]["n"] == 500 and saved["samples"]["cas"] is None
    # True labels of real test digits: the judge disagrees with them exactly where it errs (0.46% of test).
    assert saved["samples"]["label_noise"] < 0.02 and saved["floor"]["label_noise"] == pytest.approx(0.0046, abs=1e-4)
    assert "label noise (judge)" in result.output


def test_evaluate_reads_a_small_file_whole_but_never_fewer_rows_than_asked(tmp_path, test_digits):
    file = write_synthetic(tmp_path / "real.h5", test_digits.subset(torch.arange(300)))
    whole = runner.invoke(app, ["evaluate", str(file), "--no-cas"])  # the default 10,000 is more than it holds
    assert whole.exit_code == 0, whole.output
    assert "300 samples vs the 10,000 real test images" in whole.output
    more = runner.invoke(app, ["evaluate", str(file), "--n", "301", "--no-cas", "--out", str(tmp_path / "e.json")])
    assert more.exit_code == 2
    assert more.output == f"error: {file} holds 300 images; --n 301 asks for more: pass --n 300 or fewer\n"
    assert not (tmp_path / "e.json").exists()
    tiny = write_synthetic(tmp_path / "tiny.h5", test_digits.subset(torch.arange(9)))
    few = runner.invoke(app, ["evaluate", str(tiny), "--no-cas"])
    assert few.exit_code == 2
    assert "holds 9 images; evaluate needs at least 10" in few.output


def test_label_noise_counts_the_labels_the_judge_disagrees_with(test_digits):
    from classifier.checkpoint import load_judge

    digits = test_digits.subset(torch.arange(400))
    wrong = (digits.labels + 1) % 10
    wrong[:100] = digits.labels[:100]  # a quarter keep their true label
    clean = quality.measure(digits.images, digits.labels, test_digits, cas_config=None, judge=load_judge())
    noisy = quality.measure(digits.images, wrong, test_digits, cas_config=None, judge=load_judge())
    assert clean.label_noise < 0.02 and noisy.label_noise == pytest.approx(0.75, abs=0.02)


def test_evaluate_refuses_a_missing_source(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "absent.pt")])
    assert result.exit_code == 2 and "absent.pt" in result.output


def test_evaluate_labels_a_conditional_generators_samples_with_the_labeller_given(tmp_path, train, synthetic_file):
    from augment import evaluate
    from augment.checkpoint import BUNDLED_CONDITIONAL
    from classifier import checkpoint, mixing
    from classifier.checkpoint import JUDGE
    from classifier.train import TrainConfig, fit

    weak, _ = fit(mixing.build(train, 100, seed=0).train, TrainConfig(epochs=1, min_steps=10), progress=False)
    checkpoint.save(tmp_path / "weak.pt", weak, {}, {})  # ten steps on 100 digits: a poor labeller
    quiet = {"n": 300, "cas": False, "progress": False, "log": lambda *_: None}
    asked = evaluate(BUNDLED_CONDITIONAL, **quiet)
    relabelled = evaluate(BUNDLED_CONDITIONAL, labeller=tmp_path / "weak.pt", **quiet)
    assert asked.labels_from == "the classes asked for" and relabelled.labels_from == f"labels from {tmp_path / 'weak.pt'}"
    assert asked.samples.label_noise < 0.05 and relabelled.samples.label_noise > 0.1  # measured: 0.3% and 16%
    for args, message in (([synthetic_file, "--labeller", tmp_path / "weak.pt"], "carries its own labels"),
                          ([BUNDLED_CONDITIONAL, "--labeller", JUDGE], "is the judge, which estimates the label noise")):
        result = runner.invoke(app, ["evaluate", *map(str, args)])
        assert result.exit_code == 2 and message in result.output
