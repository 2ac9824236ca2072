import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from augment import trainer
from classifier import benchmark, report
from cli import app
from conftest import write_synthetic
from data.errors import InputError
from data.pixels import to_model

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY = benchmark.Sweep(sizes=(30,), ratios=(1.0, 2.0), seeds=(0, 1), relabel_rounds=1, min_confidence=0.15, epochs=2, min_steps=10, val_size=100)


@pytest.fixture(scope="module")
def small(train, test_digits):
    """A 400-image training pool, a 1,000-image test set and a pool of 300 other real digits."""
    return train.subset(torch.arange(400)), test_digits.subset(torch.arange(1000)), train.subset(torch.arange(1000, 1300))


def test_sweep_writes_every_row_and_resumes_only_what_is_missing(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    folder = tmp_path / "bench"
    rows = benchmark.run(TINY, pool, train, test, folder, "mnist")
    per_cell = 2 + 4 * len(TINY.ratios)  # real, classical; synthetic, +classical, pseudo-real, self-training per ratio
    gan_sources = {"conditional", "conditional+classical", "filtered", "filtered+classical",
                   "gan-discriminator", "classical-matched", "gan-discriminator+self-training",
                   "classical-matched+self-training"}  # need the augment side
    assert len(rows) == per_cell * len(TINY.seeds) and set(rows.variant) == set(benchmark.VARIANTS) - gan_sources
    assert (rows.steps == TINY.config(30, "none", 0).steps).all()  # one budget for the whole size
    assert (rows[rows.variant == "synthetic"].n_extra == 30 * rows[rows.variant == "synthetic"].ratio).all()
    real = rows[rows.variant.isin(["real", "classical"])]
    assert real.accuracy.between(0.15, 1).all()  # 30 images, 10 steps: above chance (0.1), far from good
    assert rows.accuracy.between(0, 1).all() and (rows.errors == ((1 - rows.accuracy) * 1000).round()).all()

    csv = folder / "rows.csv"
    full = pd.read_csv(csv)
    full.drop(index=[3, len(full) - 1]).to_csv(csv, index=False)  # as if interrupted, two rows lost
    redone = []
    again = benchmark.run(TINY, pool, train, test, folder, "mnist", on_row=redone.append)
    assert len(redone) == 2 and len(again) == len(full)
    # Same seed, same machine: the retrained rows match the lost ones exactly.
    key = ["size", "variant", "ratio", "seed"]
    merged = full.merge(again, on=key, suffixes=("", "_again"))
    assert (merged.accuracy == merged.accuracy_again).all()


def test_two_jobs_record_the_rows_one_job_records(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    sweep = replace(TINY, ratios=(1.0,), relabel_rounds=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))  # as each of 2 jobs: sums in the same order
    try:
        serial = benchmark.run(sweep, pool, train, test, tmp_path / "serial", "mnist")
    finally:
        torch.set_num_threads(threads)
    seen = []
    parallel = benchmark.run(sweep, pool, train, test, tmp_path / "parallel", "mnist", on_row=seen.append, jobs=2)
    key = ["size", "variant", "ratio", "seed"]
    a, b = (rows.sort_values(key).reset_index(drop=True).drop(columns="seconds") for rows in (serial, parallel))
    assert len(seen) == len(b) == 5 * len(sweep.seeds)  # real, classical, synthetic, +classical, pseudo-real
    pd.testing.assert_frame_equal(a, b)


def test_two_processes_under_torchrun_share_one_sweep(tmp_path, train, test_digits):
    pool = write_synthetic(tmp_path / "pool.h5", test_digits.subset(torch.arange(300)))
    sweep = benchmark.Sweep(sizes=(30,), ratios=(1.0,), seeds=(0, 1), min_steps=10, min_confidence=0.15)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))  # as each of the 2 processes
    try:
        serial = benchmark.run(sweep, pool, train, test_digits, tmp_path / "serial", "mnist")
    finally:
        torch.set_num_threads(threads)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--", "cli.py",
                           "benchmark", "--synthetic", str(pool), "--sizes", "30", "--ratios", "1", "--seeds", "2",
                           "--min-steps", "10", "--min-confidence", "0.15", "--device", "cpu",
                           "--out", str(tmp_path / "two")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| real labelled") == 1  # one report, from process 0
    key = ["size", "variant", "ratio", "seed"]
    two = pd.read_csv(tmp_path / "two" / "rows.csv")
    a, b = (rows.sort_values(key).reset_index(drop=True).drop(columns="seconds") for rows in (serial, two))
    assert len(b) == 10  # each cell's rows once: 2 seeds x (real, classical, synthetic, +classical, pseudo-real)
    pd.testing.assert_frame_equal(a, b)


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    quick = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), min_confidence=0.0, epochs=1, min_steps=5, val_size=100)
    benchmark.run(quick, pool, train, test, tmp_path / "bench", "mnist")
    with pytest.raises(InputError, match="holds another sweep"):
        benchmark.run(TINY, pool, train, test, tmp_path / "bench", "mnist")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "rows.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a rows file of this tool"):
        benchmark.run(quick, pool, train, test, tmp_path / "other", "mnist")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["rows.csv"]  # refused: the folder as it was


def test_a_sweep_extended_with_a_seed_keeps_its_rows(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    one = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), min_confidence=0.0, epochs=1, min_steps=5, val_size=100)
    first = benchmark.run(one, pool, train, test, tmp_path / "bench", "mnist")
    trained = []
    both = benchmark.run(replace(one, seeds=(0, 1)), pool, train, test, tmp_path / "bench", "mnist", on_row=trained.append)
    assert len(trained) == len(first) and len(both) == 2 * len(first) and {r["seed"] for r in trained} == {1}


def test_a_pool_too_small_for_the_ratio_says_so(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits.subset(torch.arange(50)))
    with pytest.raises(InputError, match="holds 50 images"):
        benchmark.run(TINY, pool, train, test, tmp_path / "bench", "mnist")


def test_gain_is_paired_by_seed_with_a_t_interval():
    rows = pd.DataFrame({"size": 100, "variant": ["real"] * 3 + ["classical"] * 3 + ["synthetic"] * 3,
                         "ratio": [0.0] * 6 + [1.0] * 3, "seed": [0, 1, 2] * 3,
                         "accuracy": [0.80, 0.90, 0.85, 0.83, 0.91, 0.87, 0.82, 0.93, 0.86]})
    table = report.summarise(rows)
    synthetic = table[table.variant == "synthetic"].iloc[0]
    # gains over real 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t(0.975, 2) = 4.303
    assert synthetic.gain_mean == pytest.approx(0.02) and synthetic.gain_ci95 == pytest.approx(4.303 * 0.01 / 3 ** 0.5, rel=1e-3)
    # over classical -0.01, 0.02, -0.01: mean 0, sd 0.01732
    assert synthetic.over_classical_mean == pytest.approx(0.0, abs=1e-12)
    assert synthetic.over_classical_ci95 == pytest.approx(4.303 * 0.017320508 / 3 ** 0.5, rel=1e-3)
    assert synthetic.accuracy_mean == pytest.approx(0.87) and synthetic.seeds == 3
    assert "| +2.00 +- 2.48 | +0.00 +- 4.30 |" in report.markdown(table, "# t")


def test_benchmark_cli_reports_table_and_plot(tmp_path, train, test_digits):
    pool = write_synthetic(tmp_path / "pool.h5", train.subset(torch.arange(1000, 1100)))
    args = ["benchmark", "--synthetic", pool, "--sizes", "20", "--ratios", "1", "--seeds", "2", "--min-steps", "10",
            "--min-confidence", "0.2", "--out", tmp_path / "bench"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "| 20 | synthetic | 1 |" in result.output and "gain over real-only" in result.output
    for name in ("rows.csv", "summary.csv", "report.md", "accuracy.png"):
        assert (tmp_path / "bench" / name).is_file()
    more = runner.invoke(app, [str(a) for a in args] + ["--discriminator-steps", "100"])  # the same sweep, one more variant
    assert more.exit_code == 0, more.output
    assert "| 20 | gan-discriminator | 0 |" in more.output and "100 steps of batch 100 x 3" in more.output
    matched = pd.read_csv(tmp_path / "bench" / "rows.csv").query("variant == 'classical-matched'")
    assert list(matched.steps) == [100, 100] and list(matched.n_extra) == [0, 0]
    assert "| 20 | synthetic | 1 |" in more.output and more.output.count("gan-discriminator    ratio 0") == 2
    again = runner.invoke(app, [str(a) for a in args])  # left out: its rows and their description stay in the report
    assert again.exit_code == 0 and "| 20 | gan-discriminator | 0 |" in again.output and "100 steps of batch" in again.output
    bad = runner.invoke(app, [str(a) for a in args[:3]] + ["--quick", "--sizes", "10"])
    assert bad.exit_code == 2 and "--quick fixes" in bad.output


def test_a_row_cut_short_by_a_kill_is_dropped_and_trained_again(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    one = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), min_confidence=0.0, epochs=1, min_steps=5, val_size=100)
    full = benchmark.run(one, pool, train, test, tmp_path / "bench", "mnist")
    csv = tmp_path / "bench" / "rows.csv"
    text = csv.read_text()
    csv.write_text(text[:-20])  # the last row, half written, no newline
    redone = []
    again = benchmark.run(one, pool, train, test, tmp_path / "bench", "mnist", on_row=redone.append)
    assert len(redone) == 1 and len(again) == len(full) and csv.read_text().count("\n") == text.count("\n")
    assert again.drop(columns="seconds").equals(full.drop(columns="seconds"))  # the same seed trains the same row


def test_a_source_with_asked_classes_keeps_what_the_labeller_agrees_with(tmp_path, small):
    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    one = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), min_confidence=0.0, epochs=1, min_steps=5, val_size=100)
    asked = []

    def conditional(size, seed, labeller):  # real digits "asked for" as their true class: the labeller must agree
        asked.append((size, seed))
        return pool_digits.images, pool_digits.labels

    rows = benchmark.run(one, pool, train, test, tmp_path / "bench", "mnist", sources={"conditional": conditional},
                         settings={"conditional": {"gan_minutes": 1}})
    extra = rows[rows.variant.str.startswith("conditional")]
    assert asked == [(20, 0)] and list(extra.variant) == ["conditional", "conditional+classical"]
    assert (extra.n_extra == 20).all()
    with pytest.raises(InputError, match="holds another sweep"):  # the sources' settings are part of its identity
        benchmark.run(one, pool, train, test, tmp_path / "bench", "mnist", sources={"conditional": conditional},
                      settings={"conditional": {"gan_minutes": 2}})


def test_a_sweep_extended_by_a_learner_keeps_its_rows_and_records_the_learners_classifier(tmp_path, small):
    from classifier.train import TrainConfig, evaluate, fit

    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    one = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), min_confidence=0.0, epochs=1, min_steps=5, val_size=100)
    folder = tmp_path / "bench"
    first = benchmark.run(one, pool, train, test, folder, "mnist")
    seen, models = [], []

    def learner(size, seed, real, unlabelled):  # a stand-in: a classifier trained on the subset alone
        seen.append((size, seed, len(real), len(unlabelled)))
        models.append(fit(real, TrainConfig(epochs=1, min_steps=7, seed=seed), progress=False)[0])
        return models[-1], 7, len(unlabelled)
    rows = benchmark.run(one, pool, train, test, folder, "mnist", learners={"gan-discriminator": learner},
                         settings={"gan-discriminator": {"steps": 7}})
    assert seen == [(20, 0, 20, 380)]  # the other 380 images of the training pool, without labels
    assert "gan-discriminator+self-training" not in set(rows.variant)  # no --relabel-rounds, nothing taught
    new = rows[rows.variant == "gan-discriminator"].iloc[0]
    assert len(rows) == len(first) + 1 and (new.ratio, new.n_extra, new.steps) == (0, 380, 7)
    assert new.accuracy == pytest.approx(evaluate(models[0], test))  # the learner's own classifier, tested
    assert json.loads((folder / "sweep.json").read_text())["sources"] == {"gan-discriminator": {"steps": 7}}
    benchmark.run(one, pool, train, test, folder, "mnist")  # left out again: its rows and settings stay
    with pytest.raises(InputError, match="holds another sweep"):  # but its settings may not change
        benchmark.run(one, pool, train, test, folder, "mnist", learners={"gan-discriminator": learner},
                      settings={"gan-discriminator": {"steps": 8}})


def test_a_learner_teaches_self_training_on_every_image_its_classifier_is_sure_of(tmp_path, small):
    from classifier.mixing import self_train
    from classifier.train import TrainConfig, evaluate, fit

    train, test, pool_digits = small
    pool = write_synthetic(tmp_path / "pool.h5", pool_digits)
    one = benchmark.Sweep(sizes=(20,), ratios=(1.0,), seeds=(0,), relabel_rounds=1, min_confidence=0.6, epochs=30,
                          min_steps=60, val_size=100)
    teachers = []

    def learner(size, seed, real, unlabelled):
        teachers.append((fit(real, TrainConfig(epochs=1, min_steps=60, seed=seed), progress=False)[0], real, unlabelled))
        return teachers[-1][0], 7, len(unlabelled)
    folder, kwargs = tmp_path / "bench", {"learners": {"gan-discriminator": learner, "classical-matched": learner},
                                          "settings": {"gan-discriminator": {"steps": 7}}}
    rows = benchmark.run(one, pool, train, test, folder, "mnist", **kwargs)
    teacher, real, unlabelled = teachers[0]
    student = TrainConfig(epochs=30, min_steps=60, augment="classical", seed=0)  # epochs over its own set
    model, rounds = self_train(teacher, real, unlabelled, 1, student, 0.6)
    taught = rows[rows.variant == "gan-discriminator+self-training"].iloc[0]
    assert 20 < taught.n_extra == rounds[0]["n_unlabelled"] < 380  # all it is sure of, not ratio x size
    assert (taught.ratio, taught.steps) == (0, 7 + rounds[0]["step"])  # the teacher's steps and the student's
    assert rounds[0]["step"] > one.config(20, "classical", 0).steps  # not the size's budget
    assert taught.accuracy == pytest.approx(evaluate(model, test))
    assert (rows.variant == "classical-matched+self-training").sum() == 1  # every learner teaches
    kept = rows[rows.variant != "gan-discriminator+self-training"]
    kept.to_csv(folder / "rows.csv", index=False)  # its row lost: the teacher is trained again, but not recorded twice
    again = benchmark.run(one, pool, train, test, folder, "mnist", **kwargs)
    assert len(teachers) == 3 and len(again) == len(rows) and (again.variant == "gan-discriminator").sum() == 1
    assert again[again.variant == "gan-discriminator+self-training"].accuracy.iloc[0] == pytest.approx(taught.accuracy)


def test_the_report_describes_self_training_only_where_its_rows_are():
    from classifier.report import header

    sweep, attrs = benchmark.Sweep(relabel_rounds=1), {"generator_sha256": "0" * 64, "config": {}, "min_confidence": 0}
    learner = {"gan-discriminator": {"steps": 3000, "batch": 100}}
    without = header(sweep, Path("pool.h5"), attrs, "mnist", 10000, learner, frozenset({"gan-discriminator"}))
    taught = header(sweep, Path("pool.h5"), attrs, "mnist", 10000, learner,
                    frozenset({"gan-discriminator", "gan-discriminator+self-training"}))
    assert "3,000 steps of batch 100" in without and "self-training" not in without
    assert "teaches 1 round(s) of self-training (+self-training)" in taught


def test_mix_with_labels_and_a_labeller_keeps_only_agreement(small):
    from classifier.mixing import mix
    from classifier.train import TrainConfig, fit

    train, _, pool_digits = small
    labeller, _ = fit(train, TrainConfig(epochs=1, min_steps=40), progress=False)
    wrong = (pool_digits.labels + 1) % 10  # every asked class wrong: nothing may be kept
    with pytest.raises(InputError, match=r"only \d images reach confidence 0.0 under the labeller and agree"):
        mix(train.subset(torch.arange(10)), pool_digits.images, 1.0, 0, labels=wrong, labeller=labeller)
    kept = mix(train.subset(torch.arange(10)), pool_digits.images, 5.0, 0, labels=pool_digits.labels, labeller=labeller)
    predicted = labeller(to_model(kept.images[10:])).argmax(1)
    assert len(kept) == 60 and torch.equal(predicted, kept.labels[10:])


def test_self_training_learns_every_image_its_last_model_is_sure_of(small):
    from classifier.mixing import self_train
    from classifier.train import TrainConfig, evaluate, fit, pseudo_label

    train, test, pool_digits = small
    real, config = train.subset(torch.arange(100)), TrainConfig(epochs=1, min_steps=30, augment="classical")
    teacher, _ = fit(real, config, progress=False)
    _, sure = pseudo_label(teacher, pool_digits.images, 0.5)
    seen = []
    model, rounds = self_train(teacher, real, pool_digits.images, 2, config, 0.5, val=test, on_round=seen.append)
    assert seen == rounds and [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["n_unlabelled"] == int(sure.sum()) and 0 < rounds[0]["n_unlabelled"] < len(pool_digits)
    assert rounds[1]["val_accuracy"] == pytest.approx(evaluate(model, test))  # the last round's model comes back
    _, again = self_train(teacher, real, pool_digits.images, 1, config, 0.5, ratio=0.5)
    assert again[0]["n_unlabelled"] == 50  # with a ratio: that many of them, as the benchmark's row takes


def test_gan_variants_train_a_conditional_gan_per_cell_once_and_filter_the_pool(tmp_path, train):
    pool = write_synthetic(tmp_path / "pool.h5", train.subset(torch.arange(1000, 3000)))
    args = ["benchmark", "--synthetic", pool, "--sizes", "100", "--ratios", "0.2", "--seeds", "1", "--min-steps", "20",
            "--min-confidence", "0", "--gan-minutes", "0.05", "--gan-relabel-every", "1", "--min-realism", "0.5", "--out", tmp_path / "bench"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "conditional GAN for 100 labels, seed 0: training 0.1 more minutes" in result.output
    rows = pd.read_csv(tmp_path / "bench" / "rows.csv")
    for variant in ("conditional", "conditional+classical", "filtered", "filtered+classical"):
        assert (rows[rows.variant == variant].n_extra == 20).all() and (rows.variant == variant).sum() == 1
    gan = tmp_path / "bench" / "gans" / "n100-seed0"
    saved = trainer.resumed_config(gan)
    assert saved.spec.conditional and saved.n_real == 100 and saved.labeller.endswith("n100-seed0-labeller.pt")
    assert saved.relabel_every == 1
    report_md = (tmp_path / "bench" / "report.md").read_text()
    assert "| 100 | conditional | 0.2 |" in report_md and "conditional GAN trained for 0.05 minutes" in report_md
    assert "relabelled every 1 epochs by the classifier it improves" in report_md
    assert "realism >= 0.5 in the labeller's features" in report_md
    rows[~rows.variant.str.startswith("conditional")].to_csv(tmp_path / "bench" / "rows.csv", index=False)
    again = runner.invoke(app, [str(a) for a in args])  # the lost rows come back from the cached GAN, not a new one
    assert again.exit_code == 0 and "more minutes" not in again.output
    redone = pd.read_csv(tmp_path / "bench" / "rows.csv")
    assert len(redone) == len(rows) and list(redone.variant[-2:]) == ["conditional", "conditional+classical"]
    changed = [str(a) for a in args] + ["--overwrite"]
    changed[changed.index("--gan-relabel-every") + 1] = "2"
    refused = runner.invoke(app, changed)  # --overwrite keeps gans/: a GAN of other settings is not reused
    assert refused.exit_code == 2 and "n100-seed0 holds a GAN trained with other settings" in refused.output
    assert pd.read_csv(tmp_path / "bench" / "rows.csv").equals(redone)  # refused before --overwrite discarded a row
