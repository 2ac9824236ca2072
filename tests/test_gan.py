import os
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
from classifier.checkpoint import sha256_of
from data import mnist
from data.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = trainer.GanConfig(spec=GanSpec(nz=16, g_width=16, d_width=16), epochs=2, batch_size=32, seed=5, sample_every=2)


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


def test_resume_continues_exactly_where_it_stopped(tmp_path, digits):
    straight = trainer.start(tmp_path / "straight", TINY, digits, resume=False)
    trainer.train(straight, progress=False)

    folder = tmp_path / "stopped"
    run = trainer.start(folder, TINY, digits, resume=False)
    outcomes = []
    while not outcomes or outcomes[-1].stopped != "finished":
        outcomes.append(trainer.train(run, max_minutes=1e-9, progress=False))  # stops after every single step
        run = trainer.start(folder, trainer.saved_config(folder, TINY.epochs), digits, resume=True)
    assert [o.stopped for o in outcomes] == ["time budget"] * 6 + ["finished"]
    for a, b in [(straight.g, run.g), (straight.d, run.d), (straight.g_ema, run.g_ema)]:
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert pd.read_csv(folder / "losses.csv")["step"].tolist() == pd.read_csv(tmp_path / "straight" / "losses.csv")["step"].tolist()


def test_diverging_losses_stop_and_keep_the_last_good_checkpoint(tmp_path, digits, monkeypatch):
    folder = tmp_path / "run"
    trainer.train(trainer.start(folder, trainer.GanConfig(**{**TINY.__dict__, "epochs": 1}), digits, False), progress=False)
    good = sha256_of(folder / "checkpoint.pt")
    run = trainer.start(folder, trainer.saved_config(folder, 2), digits, resume=True)
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


def test_bad_training_requests(tmp_path, digits):
    with pytest.raises(InputError, match="loss must be one of"):
        trainer.start(tmp_path / "a", trainer.GanConfig(loss="wasserstein"), digits, False)
    with pytest.raises(InputError, match="larger than the 96 training images"):
        trainer.start(tmp_path / "a", trainer.GanConfig(batch_size=128), digits, False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(InputError, match="is not empty"):
        trainer.start(tmp_path / "b", TINY, digits, False)


def test_n_real_trains_on_classifys_labelled_subset(tmp_path, train):
    run = trainer.start(tmp_path / "r", trainer.GanConfig(n_real=100, seed=3, batch_size=50), train, False)
    assert torch.equal(run.data.labels, train.labels[mnist.labelled_subset(train.labels, 100, 3)])


def test_ctrl_c_saves_a_checkpoint_the_cli_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "cli.py", "train", "--out", str(out), "--n-real", "1000", "--batch-size", "10",
           "--nz", "8", "--g-width", "8", "--d-width", "8", "--epochs", "1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:  # wait for the end of epoch 1
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted: epoch " in stdout and "--resume" in stdout
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    resumed = subprocess.run(cmd[:-1] + [str(step // 100 + 1), "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {step:,}" in resumed.stdout and "finished: epoch" in resumed.stdout
