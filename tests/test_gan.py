import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from augment import trainer
from augment.checkpoint import load_generator
from augment.models import Discriminator, GanSpec, Generator
from data.files import sha256_of
from data import mnist
from data.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = trainer.GanConfig(spec=GanSpec(nz=16, g_width=16, d_width=16), epochs=2, batch_size=32, seed=5, sample_every=2,
                         eval_every=0)
# Every recipe option at once: spectral norm, minibatch std, hinge, R1, DiffAugment.
TINY_RECIPE = trainer.GanConfig(**{**TINY.__dict__, "spec": GanSpec(nz=16, g_width=16, d_width=16, sn=True, mbstd=True),
                                   "loss": "hinge", "r1": 1.0, "diffaug": True})
TINY_CLUSTERS = trainer.GanConfig(**{**TINY.__dict__, "spec": GanSpec(nz=16, g_width=16, d_width=16, clusters=4)})


@pytest.fixture(scope="module")
def digits(train):
    return train.subset(torch.arange(96))  # 3 steps per epoch of 32


@pytest.mark.parametrize("arch", ["dcgan", "tutorial"])
@pytest.mark.parametrize("conditional", [False, True])
def test_models_draw_28x28_digits_in_range(arch, conditional):
    spec = GanSpec.preset(arch, conditional=conditional)
    z, y = torch.randn(5, spec.nz), torch.arange(5)
    x = Generator(spec)(z, y)
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert Discriminator(spec)(x, y).shape == (5,)


def test_dcgan_preset_is_the_recipe_studys_and_only_unconditional_runs_get_its_clusters():
    assert GanSpec.preset("dcgan") == GanSpec(deep=True, clusters=50, g_width=48, d_width=48)
    assert GanSpec.preset("dcgan", conditional=True) == GanSpec(deep=True, conditional=True, g_width=48, d_width=48)
    assert GanSpec.preset("dcgan", g_width=64, clusters=0) == GanSpec(deep=True, g_width=64, d_width=48)


def test_tutorial_preset_has_the_keras_models_parameter_counts():
    spec = GanSpec.preset("tutorial")
    # Keras counts batch-norm moving statistics as (non-trainable) parameters; state_dict holds them too.
    g_count = sum(t.numel() for t in Generator(spec).state_dict().values() if t.dtype.is_floating_point)
    assert spec.nz == 100 and g_count == 2_330_944
    assert sum(p.numel() for p in Discriminator(spec).parameters()) == 212_865
    assert trainer.TRAIN_PRESETS["tutorial"]["batch_size"] == 256 and trainer.TRAIN_PRESETS["tutorial"]["lr_g"] == 1e-4


def test_training_writes_grids_losses_plot_gif_and_checkpoints(tmp_path, digits):
    run = trainer.start(tmp_path / "run", TINY, digits, resume=False)
    outcome = trainer.train(run, progress=False)
    assert (outcome.stopped, outcome.step, outcome.epoch) == ("finished", 6, 2)
    folder = tmp_path / "run"
    grids = sorted(p.name for p in (folder / "samples").glob("*.png"))
    assert grids == ["step_00000000.png", "step_00000002.png", "step_00000003.png", "step_00000004.png", "step_00000006.png"]
    assert Image.open(folder / "samples" / grids[-1]).size == (2 * 302, 2 * 302)
    gif = Image.open(folder / "progress.gif")
    assert gif.n_frames == len(grids) and (folder / "losses.png").stat().st_size > 1000
    g, payload = load_generator(folder / "generator.pt")
    assert payload["info"]["step"] == 6 and g.spec == TINY.spec
    assert sha256_of(folder / "generator.pt") in (folder / "generator.json").read_text()


@pytest.mark.parametrize("config", [TINY, TINY_RECIPE, TINY_CLUSTERS], ids=["default", "all-recipe-options", "clusters"])
def test_resume_continues_exactly_where_it_stopped(tmp_path, digits, config):
    straight = trainer.start(tmp_path / "straight", config, digits, resume=False)
    trainer.train(straight, progress=False)

    folder = tmp_path / "stopped"
    run = trainer.start(folder, config, digits, resume=False)
    outcomes = []
    while not outcomes or outcomes[-1].stopped != "finished":
        outcomes.append(trainer.train(run, max_minutes=1e-9, progress=False))  # stops after every single step
        run = trainer.start(folder, trainer.resumed_config(folder, config.epochs), digits, resume=True)
    assert [o.stopped for o in outcomes] == ["time budget"] * 6 + ["finished"]
    for a, b in [(straight.g, run.g), (straight.d, run.d), (straight.g_ema, run.g_ema)]:
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert pd.read_csv(folder / "losses.csv")["step"].tolist() == pd.read_csv(tmp_path / "straight" / "losses.csv")["step"].tolist()


def test_diverging_losses_stop_and_keep_the_last_good_checkpoint(tmp_path, digits, monkeypatch):
    folder = tmp_path / "run"
    trainer.train(trainer.start(folder, trainer.GanConfig(**{**TINY.__dict__, "epochs": 1}), digits, False), progress=False)
    good = sha256_of(folder / "checkpoint.pt")
    run = trainer.start(folder, trainer.resumed_config(folder, 2), digits, resume=True)
    real_step = trainer.GanRun.train_step
    calls = []

    def nan_on_second_step(self, idx):
        losses = real_step(self, idx)
        calls.append(1)
        return {**losses, "d_loss": float("nan")} if len(calls) == 2 else losses

    monkeypatch.setattr(trainer.GanRun, "train_step", nan_on_second_step)
    outcome = trainer.train(run, progress=False)
    assert outcome.stopped == "diverged" and "losses diverged at step 5" in outcome.message
    assert sha256_of(folder / "checkpoint.pt") == good


def test_a_run_that_diverges_at_once_can_still_be_resumed(tmp_path, digits, monkeypatch):
    folder = tmp_path / "run"
    real_step = trainer.GanRun.train_step
    monkeypatch.setattr(trainer.GanRun, "train_step", lambda self, idx: {**real_step(self, idx), "g_loss": float("inf")})
    outcome = trainer.train(trainer.start(folder, TINY, digits, False), progress=False)
    assert outcome.stopped == "diverged" and "at step 1 " in outcome.message
    monkeypatch.setattr(trainer.GanRun, "train_step", real_step)
    run = trainer.start(folder, trainer.resumed_config(folder, 1), digits, resume=True)
    assert run.step == 0 and trainer.train(run, progress=False).stopped == "finished"


def test_bad_training_requests(tmp_path, digits):
    with pytest.raises(InputError, match="loss must be one of"):
        trainer.start(tmp_path / "a", trainer.GanConfig(loss="wasserstein"), digits, False)
    with pytest.raises(InputError, match="larger than the 96 training images"):
        trainer.start(tmp_path / "a", trainer.GanConfig(batch_size=128, eval_every=0), digits, False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(InputError, match="is not empty"):
        trainer.start(tmp_path / "b", TINY, digits, False)
    with pytest.MonkeyPatch.context() as m:  # the folder is checked before the pool is labelled (seconds of work)
        m.setattr(trainer, "training_set", lambda *_: pytest.fail("the pool was labelled before the folder was checked"))
        with pytest.raises(InputError, match="is not empty"):
            trainer.start(tmp_path / "b", TINY, digits, False)
    with pytest.raises(InputError, match="100 clusters need at least as many training images, and there are 96"):
        trainer.start(tmp_path / "c", trainer.GanConfig(spec=GanSpec(clusters=100), batch_size=32), digits, False)
    for bad in ({"clusters": 1}, {"clusters": 1001}, {"clusters": 10, "conditional": True}, {"clusters": 10, "nz": 1}):
        with pytest.raises(InputError, match="clusters must be in 2..1000"):
            GanSpec(**bad)


def test_n_real_trains_on_classifys_labelled_subset(tmp_path, train):
    run = trainer.start(tmp_path / "r", trainer.GanConfig(n_real=100, seed=3, batch_size=50, eval_every=0), train, False)
    assert torch.equal(run.data.labels, train.labels[mnist.labelled_subset(train.labels, 100, 3)])


def test_semi_supervised_conditional_gan_adds_the_labellers_confident_labels(tmp_path, train):
    from classifier import checkpoint
    from classifier.train import TrainConfig, fit, predict_proba

    subset = mnist.labelled_subset(train.labels, 100, 3)
    labeller, _ = fit(train.subset(subset), TrainConfig(epochs=1, min_steps=60), progress=False)
    trained = {"n_real": 100, "seed": 3, "n_synthetic": 0, "val_size": 5000, "dataset": "mnist"}
    checkpoint.save(tmp_path / "other.pt", labeller, {**trained, "n_real": 1000}, {})
    with pytest.raises(InputError, match="trained on n_real 1000"):
        trainer.start(tmp_path / "o", trainer.GanConfig(spec=GanSpec(conditional=True), n_real=100, seed=3,
                                                        labeller=str(tmp_path / "other.pt")), train, False)
    checkpoint.save(tmp_path / "labeller.pt", labeller, trained, {})
    config = trainer.GanConfig(spec=GanSpec(conditional=True), n_real=100, seed=3, batch_size=50, eval_every=0,
                               labeller=str(tmp_path / "labeller.pt"), min_confidence=0.95)
    run = trainer.start(tmp_path / "r", config, train, False)
    trainer.train(run, max_minutes=1e-9, progress=False)  # one step, and a checkpoint to resume
    data = run.data
    assert torch.equal(data.images[:100], train.images[subset]) and torch.equal(data.labels[:100], train.labels[subset])
    extra = data.images[100:]
    probs = predict_proba(labeller, extra)
    assert 1000 < len(extra) < 55_000 - 100 and (probs.max(1).values >= 0.95).all()
    assert torch.equal(probs.argmax(1), data.labels[100:])
    # Nothing from the validation split, nothing from the labelled subset twice.
    _, val = mnist.validation_split(train.labels)
    held_out = {bytes(im.numpy()) for im in train.images[torch.cat([val, subset])]}
    assert not any(bytes(im.numpy()) in held_out for im in extra)
    with pytest.raises(InputError, match="give both"):
        trainer.start(tmp_path / "s", trainer.GanConfig(n_real=100, labeller=str(tmp_path / "labeller.pt")), train, False)
    resumed = trainer.start(tmp_path / "r", trainer.resumed_config(tmp_path / "r", 2), train, True)
    assert torch.equal(resumed.data.labels, data.labels) and resumed.step == 1
    checkpoint.save(tmp_path / "labeller.pt", labeller, {**trained, "changed": True}, {})
    with pytest.raises(InputError, match="not the labeller this run started with"):
        trainer.start(tmp_path / "r", trainer.resumed_config(tmp_path / "r", 2), train, True)
    (tmp_path / "labeller.pt").unlink()
    with pytest.raises(InputError, match="the labeller this run started with is missing"):
        trainer.start(tmp_path / "r", trainer.resumed_config(tmp_path / "r", 2), train, True)


def test_relabelling_makes_the_classifier_the_gan_improves_the_labeller_and_resumes_with_it(tmp_path, train, monkeypatch):
    from augment import relabel
    from classifier import checkpoint
    from classifier.train import TrainConfig, evaluate, fit

    monkeypatch.setattr(relabel, "SAMPLES", 400)  # the improved classifier sees 400 samples here, not 10,000
    subset = mnist.labelled_subset(train.labels, 100, 3)
    labeller, _ = fit(train.subset(subset), TrainConfig(epochs=1, min_steps=60), progress=False)
    checkpoint.save(tmp_path / "labeller.pt", labeller, {"n_real": 100, "seed": 3, "n_synthetic": 0, "val_size": 5000,
                                                         "dataset": "mnist"}, {})
    # A GAN that cannot draw digits yet: too few of its samples pass, and the labeller stays.
    _, val = mnist.validation_split(train.labels)
    labels = relabel.Labels(train.subset(subset), train.images[:2000], train.subset(val[:500]), labeller, 0.9)
    assert not labels.improve(Generator(GanSpec(nz=16, g_width=16, d_width=16, conditional=True)), 0, least=1)
    assert labels.labeller is labeller
    # A GAN that draws digits, but a labeller that no classifier of 100 labels and 400 samples matches on validation
    # (the reference, trained on all of train): it stays.
    bundled, _ = load_generator(ROOT / "augment" / "weights" / "generator-conditional.pt")
    reference = checkpoint.load_reference()
    labels = relabel.Labels(train.subset(subset), train.images[:2000], train.subset(val[:500]), reference, 0.9)
    assert not labels.improve(bundled, 0, least=1)
    assert labels.labeller is reference
    # Two steps per epoch on a pool of 3,000, from the bundled conditional generator's weights: its samples are digits.
    small = train.subset(torch.arange(8000))
    config = trainer.GanConfig(spec=bundled.spec, n_real=100, seed=3, epochs=2,
                               eval_every=0, labeller=str(tmp_path / "labeller.pt"),
                               labeller_sha256=sha256_of(tmp_path / "labeller.pt"), relabel_every=1)
    n = len(trainer.training_set(small, config)[0])
    config = trainer.GanConfig(**{**config.__dict__, "batch_size": n // 2, "labeller_sha256": None})
    run = trainer.start(tmp_path / "r", config, small, False)
    for g in (run.g, run.g_ema):
        g.load_state_dict(bundled.state_dict())
    outcome = trainer.train(run, progress=False)
    log = pd.read_csv(tmp_path / "r" / "labels.csv")
    # The second round's classifier falls short of the first's on validation: the labeller and its set stay.
    assert log.replaced.tolist() == [0, 1, 0] and log.images[0] == n and log.images[1] > n
    assert log.images[2] == log.images[1] and log.val_accuracy[2] == log.val_accuracy[1]
    assert log.step.tolist() == [0, 2, 2 + log.images[1] // (n // 2)]  # epoch 2 ran over the relabelled set
    assert log.val_accuracy[0] == pytest.approx(evaluate(labeller, small.subset(mnist.validation_split(small.labels)[1])))
    assert log.val_accuracy[1] > log.val_accuracy[0] + 0.05  # the improved classifier labels better
    assert outcome.labels == {"first": log.val_accuracy[0], "last": log.val_accuracy[2], "rounds": 2, "replaced": 1,
                              "images": log.images[2]}
    resumed = trainer.start(tmp_path / "r", trainer.resumed_config(tmp_path / "r", 3), small, True)
    assert torch.equal(resumed.data.labels, run.data.labels) and len(resumed.data) == log.images[2]
    assert torch.equal(resumed.labels.assigned, run.labels.assigned)
    assert all(torch.equal(a, b) for a, b in zip(resumed.labels.labeller.state_dict().values(),
                                                 run.labels.labeller.state_dict().values()))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_the_cli_resumes(tmp_path, sig):
    out = tmp_path / "run"
    cmd = [sys.executable, "cli.py", "train", "--out", str(out), "--n-real", "1000", "--batch-size", "10",
           "--nz", "8", "--g-width", "8", "--d-width", "8", "--eval-every", "0", "--epochs", "1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    deadline = time.time() + 60
    while not (out / "samples" / "step_00000100.png").exists() and time.time() < deadline:  # wait for the end of epoch 1
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr  # as a shell reports a command its signal ended
    assert "interrupted: epoch " in stdout and "--resume" in stdout
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    resumed = subprocess.run(cmd[:-1] + [str(step // 100 + 1), "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {step:,}" in resumed.stdout and "finished: epoch" in resumed.stdout


def test_sigkill_at_random_instants_loses_nothing_and_resume_stays_exact(tmp_path):
    """Killed (no chance to clean up) at random instants and resumed each time, a run ends with the weights of an
    uninterrupted one, and its checkpoint, generator, sidecar and logs describe the same step."""
    cmd = [sys.executable, "cli.py", "train", "--n-real", "200", "--batch-size", "10", "--nz", "8", "--g-width", "8",
           "--d-width", "8", "--eval-every", "0", "--epochs", "20", "--device", "cpu", "--out"]
    straight = subprocess.run(cmd + [str(tmp_path / "straight")], cwd=ROOT, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    out, rng, kills, loaded = tmp_path / "killed", random.Random(0), 0, []
    sidecar = out / "generator.json"  # written when a run starts training, fresh or resumed
    proc, before = subprocess.Popen(cmd + [str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), 0
    while True:
        deadline = time.time() + 60
        while proc.poll() is None and (not sidecar.exists() or sidecar.stat().st_mtime_ns == before) \
                and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 1.5))
        if proc.poll() is not None or trainer.load_training(out / "checkpoint.pt")["step"] == 400:
            proc.wait()  # the last steps are done: let it finish
            break
        proc.kill()
        proc.wait()
        kills += 1
        loaded.append(trainer.load_training(out / "checkpoint.pt")["step"])  # never a half-written checkpoint
        before = sidecar.stat().st_mtime_ns
        proc = subprocess.Popen(cmd + [str(out), "--resume"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.read()
    assert kills >= 2 and loaded == sorted(loaded)
    g, payload = load_generator(out / "generator.pt")  # its sidecar's sha256 matches
    assert payload["info"]["step"] == trainer.load_training(out / "checkpoint.pt")["step"] == 400
    steps = pd.read_csv(out / "losses.csv")["step"].tolist()
    assert steps == list(range(20, 401, 20))  # every row once: none lost, none from a step that was redone
    reference, _ = load_generator(tmp_path / "straight" / "generator.pt")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), reference.state_dict().values()))
    assert not list(out.glob(".*.tmp"))  # what the kills left was cleaned up


def test_two_processes_train_a_run_that_one_process_resumes_from_the_same_image(tmp_path):
    """Under torchrun (gloo), each process takes half of every global batch and process 0 alone writes; a
    checkpoint saved mid-epoch by 2 processes resumes in 1 at the same image of the epoch."""
    out = tmp_path / "run"
    args = ["cli.py", "train", "--out", str(out), "--n-real", "400", "--batch-size", "10", "--nz", "8", "--g-width", "8",
            "--d-width", "8", "--eval-every", "0", "--device", "cpu", "--epochs", "1"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args,
                          "--max-minutes", "1e-9"], cwd=ROOT, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("20 steps/epoch of 10 x 2 processes") == 1  # 400 images / (2 x 10); one report
    assert "time budget: epoch 0, step 1," in two.stdout
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (saved["step"], saved["position"], saved["world"]) == (1, 1, 2)
    again = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
                           cwd=ROOT, capture_output=True, text=True)  # process 0's check fails: both stop with it
    assert again.returncode != 0 and again.stderr.count("error: ") == 1 and "is not empty" in again.stderr
    assert "Connection closed" not in again.stderr  # no process died waiting for the other
    one = subprocess.run([sys.executable, *args, "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "40 steps/epoch of 10," in one.stdout and "from step 1 " in one.stdout
    assert "finished: epoch 1, step 39," in one.stdout  # the 20 images already seen are not seen again this epoch
    assert load_generator(out / "generator.pt")[1]["info"]["step"] == 39


def test_fid_is_tracked_during_training_and_survives_resume(tmp_path, train):
    config = trainer.GanConfig(**{**TINY.__dict__, "n_real": 128, "eval_every": 0.5, "sample_every": 0})  # 4 steps/epoch
    folder = tmp_path / "run"
    run = trainer.start(folder, config, train, resume=False)
    assert run.eval_steps == 2
    first = trainer.train(run, max_minutes=1e-9, progress=False)  # stops after one step
    with open(folder / "metrics.csv", "a") as f:  # a row logged after the checkpoint, as a killed run leaves
        f.write("5,1.25,0.1,999.0,1.8,10.0\n")
    run = trainer.start(folder, trainer.resumed_config(folder, 3), train, resume=True)
    outcome = trainer.train(run, progress=False)
    log = pd.read_csv(folder / "metrics.csv")
    assert first.step == 1 and log["step"].tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert log["minutes"].is_monotonic_increasing and log["minutes"].iloc[0] == 0
    floor = log["floor"].iloc[0]
    assert (log["floor"] == floor).all() and 0.5 < floor < 5  # 5,000 real train images vs the validation split
    assert (log["fid"] > 20 * floor).all()  # a dozen steps of a tiny GAN are far from real digits
    assert ((log["class_gap"] > 0) & (log["class_gap"] < 92)).all()  # points; about 90 when every sample reads as one class
    q = outcome.quality
    assert q["best_fid"] == log["fid"].min() and q["floor"] == floor and q["minutes_to_10x"] is None
    assert (folder / "fid.png").stat().st_size > 1000


def test_fid_summary_finds_the_first_time_under_ten_times_the_floor(tmp_path):
    path = tmp_path / "metrics.csv"
    pd.DataFrame({"step": [0, 10, 20, 30], "epoch": [0, 1, 2, 3], "minutes": [0.0, 1.5, 3.0, 4.5],
                  "fid": [500.0, 19.0, 25.0, 12.0], "floor": [2.0] * 4}).to_csv(path, index=False)
    q = trainer.fid_summary(path)
    assert (q["best_fid"], q["best_step"], q["minutes_to_10x"]) == (12.0, 30, 1.5)


def test_deep_adds_a_conv_block_to_each_network_and_only_to_dcgan():
    plain, deep = GanSpec(), GanSpec(deep=True)
    count = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    assert count(Generator(deep)) == count(Generator(plain)) + 1 and count(Discriminator(deep)) == count(Discriminator(plain)) + 1
    assert Generator(deep)(torch.randn(4, 64)).shape == (4, 1, 28, 28)
    with pytest.raises(InputError, match="deep is an option of the dcgan"):
        trainer.GanConfig(spec=GanSpec.preset("tutorial", deep=True)).check()
    with pytest.raises(InputError, match="multiple of 4"):
        trainer.GanConfig(spec=GanSpec(mbstd=True), batch_size=30).check()


def test_the_dcgan_preset_self_conditions_unconditional_generators_only():
    assert GanSpec.preset("dcgan").clusters == 50 and GanSpec.preset("dcgan", conditional=True).clusters == 0
    assert GanSpec.preset("dcgan", clusters=0).clusters == 0 and GanSpec.preset("tutorial").clusters == 0
    assert trainer.make_config(conditional=True).spec.as_dict() == trainer.make_config(conditional=True, clusters=0).spec.as_dict()
    unconditional, conditional = trainer.make_config(), trainer.make_config(conditional=True)
    assert (unconditional.lr_g, unconditional.lr_d, conditional.lr_g, conditional.lr_d) == (5e-4,) * 4
    assert trainer.make_config(lr_g=1e-3).lr_g == 1e-3 and trainer.make_config("tutorial").lr_g == 1e-4


def test_kmeans_clusters_of_digits_are_mostly_one_digit_each(train):
    from augment.clusters import kmeans

    images, labels = train.images[:3000], train.labels[:3000]
    clusters, shares = kmeans(images, 30, seed=0)
    assert clusters.shape == (3000,) and 0 <= clusters.min() and clusters.max() == 29
    assert torch.allclose(shares, torch.bincount(clusters, minlength=30) / 3000) and shares.sum().item() == pytest.approx(1)
    purity = sum(torch.bincount(labels[clusters == k]).max().item() for k in range(30)) / 3000
    assert purity > 0.7  # no labels used: 0.1 would be chance
    assert torch.equal(kmeans(images, 30, seed=0)[0], clusters)


def test_a_self_conditioned_generator_draws_each_cluster_as_often_as_training_held_it():
    g = Generator(GanSpec(nz=8, g_width=8, clusters=5)).eval()
    g.prior.copy_(torch.tensor([0.5, 0.05, 0.2, 0.15, 0.1]))
    z = torch.randn(40_000, 8, generator=torch.Generator().manual_seed(0))
    drawn = torch.bincount(g.cluster_of(z), minlength=5) / len(z)
    assert (drawn - g.prior).abs().max() < 0.01
    with torch.no_grad():  # the first latent acts through the cluster alone: moved within it, nothing changes
        z, moved = z[:50], z[:50].clone()
        moved[:, 0] = torch.special.ndtri(torch.rand(50) * 0.49)  # anywhere in cluster 0 (the lowest half)
        same = g.cluster_of(z) == 0
        assert same.sum() > 10 and (g.cluster_of(moved) == 0).all()
        images, moved_images = g(z), g(moved)
        assert torch.equal(images[same], moved_images[same])
        assert all(not torch.equal(a, b) for a, b in zip(images[~same], moved_images[~same]))


def test_self_conditioned_training_keeps_its_clusters_and_their_prior(tmp_path, digits, monkeypatch):
    from augment import clusters as clustering
    from augment.checkpoint import save_generator
    from augment.explore import interpolation
    from augment.pipeline import draw

    folder = tmp_path / "r"
    run = trainer.start(folder, TINY_CLUSTERS, digits, False)
    trainer.train(run, progress=False)
    clusters, shares = clustering.kmeans(digits.images, 4, TINY_CLUSTERS.seed)
    assert torch.equal(run.classes, clusters)
    g, _ = load_generator(folder / "generator.pt")
    assert g.spec.clusters == 4 and torch.equal(g.prior, shares)
    assert torch.equal(trainer.load_training(folder / "checkpoint.pt")["clusters"].long(), clusters)
    # Drawn and walked as any unconditional generator: from noise alone, no classes asked for
    images, asked = draw(g, 30, seed=1)
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8 and asked is None
    assert interpolation(g, torch.randn(2, 16), torch.randn(2, 16), 5).shape == (10, 28, 28)
    # A resumed run trains on its saved clusters: it never runs k-means again
    monkeypatch.setattr(trainer, "kmeans", lambda *a: pytest.fail("k-means ran on resume"))
    resumed = trainer.start(folder, trainer.resumed_config(folder, 3), digits, resume=True)
    assert torch.equal(resumed.classes, clusters)
    resumed.release()
    state = trainer.load_training(folder / "checkpoint.pt")
    broken_prior = {**state, "g_ema": {**state["g_ema"], "prior": torch.full((4,), 0.5)}}
    for bad in ({**state, "clusters": clusters[:-1]}, {**state, "clusters": torch.full_like(clusters, 4)},
                {**state, "clusters": None}, {**state, "clusters": clusters.float() + 0.5}, broken_prior):
        trainer.save_training(folder / "checkpoint.pt", bad)  # short, out of range, missing, fractional; shares sum to 2
        with pytest.raises(InputError, match="damaged, it does not restore this run"):
            trainer.start(folder, trainer.resumed_config(folder, 3), digits, resume=True)
    save_generator(tmp_path / "g.pt", g.spec, {**g.state_dict(), "prior": torch.tensor([0.9, 0.3, -0.1, -0.1])},
                   {"run": TINY_CLUSTERS.as_dict(), "step": 6})
    with pytest.raises(InputError, match="cluster shares are not a distribution"):
        load_generator(tmp_path / "g.pt")
    weight = g.state_dict()["project.0.weight"]
    save_generator(tmp_path / "g.pt", g.spec, {**g.state_dict(), "project.0.weight": weight.to(torch.complex64)},
                   {"run": TINY_CLUSTERS.as_dict(), "step": 6})
    with pytest.raises(InputError, match="weight project.0.weight holds complex numbers"):
        load_generator(tmp_path / "g.pt")


def test_clusters_appear_in_records_only_when_on_and_a_resume_cannot_switch_them(tmp_path, digits):
    assert "clusters" not in GanSpec().as_dict() and GanSpec(clusters=3).as_dict()["clusters"] == 3
    trainer.train(trainer.start(tmp_path / "r", TINY, digits, False), progress=False)
    with pytest.raises(InputError, match=r"--clusters 4 \(saved: 0\)"):
        trainer.resumed_config(tmp_path / "r", clusters=4)


def test_discriminator_options_are_built_as_named():
    sn = Discriminator(GanSpec(sn=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in sn.modules())
    x = torch.randn(8, 1, 28, 28)
    for _ in range(20):  # power iterations converge in training mode
        sn(x)
    w = sn.body[2].weight.flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)
    mb = Discriminator(GanSpec(mbstd=True))
    assert mb.head.in_features == (2 * 64 + 1) * 49


def test_minibatch_std_sees_variety_and_keeps_gradients_finite():
    from augment.models import minibatch_std

    same = torch.ones(8, 3, 2, 2, requires_grad=True)
    std = minibatch_std(same)
    std.sum().backward()
    assert std.shape == (8, 1, 2, 2) and std.max() < 1e-3 and torch.isfinite(same.grad).all()
    varied = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 2, 2)  # groups {0, 2, 4, 6} and {1, 3, 5, 7}
    assert torch.allclose(minibatch_std(varied)[:, 0, 0, 0], torch.full((8,), 5 ** 0.5))


def test_diff_augment_translates_and_cuts_out_the_same_way_for_the_same_noise(digits):
    from augment.diffaug import diff_augment
    from data.pixels import to_model
    
    x = to_model(digits.images[:64]).requires_grad_(True)
    a = diff_augment(x, torch.Generator().manual_seed(1))
    b = diff_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, x)
    ink = lambda t: (t + 1).sum((1, 2, 3))  # noqa: E731
    assert (ink(a) <= ink(x) + 1e-4).all() and (ink(a) < ink(x)).float().mean() > 0.5  # moved and cut, never added
    a.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}  # pixels pass through or are dropped
    blank = diff_augment(torch.ones(500, 1, 28, 28), torch.Generator().manual_seed(2))
    cut = (blank == -1).sum((1, 2, 3))  # translation pads up to 4 rows and columns, the cutout is 14x14 at most
    assert cut.max() <= 14 * 14 + 2 * 4 * 28 and (cut >= 14 * 14).float().mean() > 0.2
    shifted = diff_augment(torch.ones(500, 1, 28, 28), torch.Generator().manual_seed(2), cut=0)
    assert ((shifted == -1).sum((1, 2, 3)) <= 4 * 28 * 2).all() and (shifted == -1).any()


def test_r1_penalty_is_gamma_half_the_squared_input_gradient_times_16():
    w = torch.randn(1, 28, 28)
    real = torch.randn(5, 1, 28, 28, requires_grad=True)
    d_real = (real * w).sum((1, 2, 3)) ** 2 / 2  # D(x) = (w.x)^2 / 2: grad = (w.x) w, per image
    expected = ((real.detach() * w).sum((1, 2, 3)) ** 2 * w.square().sum()).mean() * (3.0 / 2 * 16)
    assert torch.allclose(trainer.r1_penalty(d_real, real, 3.0), expected, rtol=1e-5)


def test_r1_is_added_lazily_every_16th_step(digits, monkeypatch):
    calls = []
    real_penalty = trainer.r1_penalty
    monkeypatch.setattr(trainer, "r1_penalty", lambda *a: calls.append(1) or real_penalty(*a))
    run = trainer.GanRun(Path("unused"), trainer.GanConfig(**{**TINY.__dict__, "r1": 1.0}), digits)
    steps = []
    for step in range(33):
        run.step = step
        n = len(calls)
        run.train_step(torch.arange(32))
        steps += [step] * (len(calls) - n)
    assert steps == [0, 16, 32]


def test_metrics_rows_are_written_once_per_step_in_the_files_own_columns(tmp_path, digits):
    class Probe:
        floor = 1.8

        def __call__(self, g):
            return {"fid": 100.0, "class_gap": 5.0}

    run = trainer.GanRun(tmp_path, TINY, digits, Probe())
    run.measure()
    run.measure()  # resumed from the step-0 checkpoint: no second row
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [0]
    (tmp_path / "metrics.csv").write_text("step,epoch,minutes,fid,floor\n0,0.0,0.0,900.0,1.8\n")  # an older run's file
    run.step = 3
    run.measure()
    log = pd.read_csv(tmp_path / "metrics.csv")
    assert list(log.columns) == ["step", "epoch", "minutes", "fid", "floor"] and log["fid"].tolist() == [900.0, 100.0]


def test_a_second_writer_of_a_run_folder_is_refused_until_the_first_ends(tmp_path, digits):
    first = trainer.start(tmp_path / "run", TINY, digits, resume=False)
    with pytest.raises(InputError, match="in use by another process"):  # nothing written yet: it passed "not empty"
        trainer.start(tmp_path / "run", TINY, digits, resume=False)
    trainer.train(first, max_minutes=1e-9, progress=False)
    again = trainer.start(tmp_path / "run", trainer.resumed_config(tmp_path / "run"), digits, resume=True)
    assert again.step == 1


def test_damaged_checkpoints_and_weights_are_refused(tmp_path, digits):
    folder = tmp_path / "run"
    trainer.train(trainer.start(folder, TINY, digits, False), max_minutes=1e-9, progress=False)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    broken = {**state, "g": {**state["g"], next(iter(state["g"])): torch.full_like(next(iter(state["g"].values())), float("nan"))}}
    torch.save(broken, folder / "checkpoint.pt")
    with pytest.raises(InputError, match="NaN or inf"):
        trainer.start(folder, trainer.resumed_config(folder), digits, resume=True)
    torch.save({k: v for k, v in state.items() if k != "opt_d"}, folder / "checkpoint.pt")
    with pytest.raises(InputError, match="damaged, it does not restore this run"):
        trainer.start(folder, trainer.resumed_config(folder), digits, resume=True)
    torch.save({k: v for k, v in state.items() if k != "config"}, folder / "checkpoint.pt")
    with pytest.raises(InputError, match="no usable config"):
        trainer.resumed_config(folder)
    torch.save({**state, "config": {**state["config"], "spec": {**state["config"]["spec"], "nz": 16.0}}},
               folder / "checkpoint.pt")
    with pytest.raises(InputError, match="must be whole numbers"):
        trainer.resumed_config(folder)
    for damage in ({"relabel_every": "2"}, {"relabel_every": 1.5}, {"min_confidence": "0.5"}):
        torch.save({**state, "config": {**state["config"], **damage}}, folder / "checkpoint.pt")
        with pytest.raises(InputError, match="no usable config"):
            trainer.resumed_config(folder)
    torch.save({**state, "assigned": torch.zeros(5, dtype=torch.int8)}, folder / "checkpoint.pt")
    with pytest.raises(InputError, match="its relabelling state does not match its config"):
        trainer.start(folder, trainer.resumed_config(folder), digits, resume=True)
    with open(folder / "generator.pt", "r+b") as f:  # one byte changed: the sha256 in generator.json no longer matches
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(InputError, match="sha256 does not match"):
        load_generator(folder / "generator.pt")


def test_temporaries_of_killed_writers_are_cleaned_and_live_ones_kept(tmp_path):
    from data.files import save_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live = tmp_path / f".x.pt.{dead.stdout.strip()}.tmp", tmp_path / f".x.pt.{os.getppid()}.tmp"
    stale.write_bytes(b"half"), live.write_bytes(b"busy")
    save_atomic({"kind": "k"}, tmp_path / "x.pt")
    assert not stale.exists() and live.exists() and (tmp_path / "x.pt").is_file()
