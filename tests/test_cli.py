import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import synthetic_attrs
from data.files import lock_output
from data.synthetic import SyntheticWriter

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_classify_mixes_trains_evaluates_and_saves(tmp_path, synthetic_file):
    out = tmp_path / "clf.pt"
    result = run("classify", "--n-real", 200, "--synthetic", synthetic_file, "--ratio", 0.5, "--augment", "classical",
                 "--epochs", 2, "--min-steps", 40, "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert "training on 200 real + 100 synthetic mnist images" in result.output
    assert "test accuracy 0." in result.output and "errors in 10,000" in result.output
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["config"]["n_synthetic"] == 100 and sidecar["config"]["augment"] == "classical"
    assert sidecar["sha256"][:16] in result.output
    again = run("classify", "--n-real", 200, "--epochs", 1, "--out", out)
    assert again.exit_code == 2 and again.output == f"error: {out} already exists: pass --overwrite to replace it\n"


@pytest.mark.parametrize("args, expected", [
    (["classify", "--augment", "mixup"], "augment must be one of none, classical"),
    (["classify", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["classify", "--n-real", "0"], "asked for 0 labelled images"),
    (["classify", "--ratio", "2"], "--ratio needs --synthetic FILE"),
    (["classify", "--synthetic", "absent.h5", "--n-real", "10"], "absent.h5: no such file"),
    (["classify", "--data-dir", "nowhere/at/all", "--n-real", "10"], "nowhere/at/all"),
    (["info", "absent.h5"], "absent.h5: no such file"),
    (["classify", "--no-such-option"], "No such option"),
    (["train", "--arch", "biggan"], "arch must be one of dcgan, tutorial"),
    (["train", "--device", "tpu"], "device 'tpu' is not available"),
    (["generate", "--device", "tpu"], "device 'tpu' is not available"),
    (["evaluate", "--device", "tpu"], "device 'tpu' is not available"),
    (["evaluate", "--n", "3"], "n must be in 10..55,000"),
    (["benchmark", "--seeds", "0"], "need 1..100 seeds, got 0"),
    (["benchmark", "--seeds", str(2**63)], "need 1..100 seeds"),
    (["train", "--seed", str(2**63)], "seed must be in 0..2^63-1"),
    (["train", "--nz", str(10**9)], "latent size must be in 1..4096"),
    (["train", "--batch-size", str(10**9)], "batch size must be in 2..60,000"),
    (["classify", "--lr", "inf"], "learning rate must be in (0, 1]"),
    (["classify", "--seed", "-1"], "seed must be in 0..2^63-1"),
    (["generate", "--n", str(10**12)], "n must be in 1..2,000,000"),
    (["interpolate", "--seed", str(2**63)], "seed must be in 0..2^63-1"),
    (["benchmark", "--quick", "--seeds", "2"], "--quick fixes sizes"),
    (["benchmark", "--sizes", "57000"], "sizes must be in 1..55,000"),
    (["benchmark", "--device", "tpu"], "device 'tpu' is not available"),
    (["interpolate", "--digit", "11"], "digit must be in 0..9"),
    (["show", "absent.h5", "--out", "x.txt"], "x.txt: choose a .png output"),
    (["report", "nowhere"], "nowhere"),
    (["classify", "--out", "afile/c.pt"], "afile is a file, so afile/c.pt cannot be written"),
    (["classify", "--out", ".", "--overwrite"], ". is a folder: name a file"),
    (["train", "--out", "afile"], "afile is a file: --out names the run's folder"),
    (["train", "--clusters", "1"], "clusters must be in 2..1000"),
    (["train", "--relabel-every", "2", "--conditional"], "--relabel-every relabels what --labeller labelled: give both"),
    (["train", "--relabel-every", "-1"], "relabel-every must be in 0..100,000 epochs"),
    (["benchmark", "--gan-relabel-every", "2"], "needs --gan-minutes"),
    (["benchmark", "--gan-minutes", "-1"], "gan-minutes must be in 0..10,000 (0 leaves the variant out), got -1"),
    (["benchmark", "--discriminator-steps", "10"], "discriminator-steps must be in 100..1,000,000 (0 leaves the variant out)"),
    (["train", "--min-confidence", "0.5", "--conditional", "--n-real", "100"], "--min-confidence is the threshold of"),
    (["generate", "--out", "."], ". is a folder: name a file"),
    (["evaluate", "--labeller", ".", "--no-cas"], ".: a folder, not a checkpoint"),
    (["train", "--clusters", "20", "--conditional"], "clusters must be in 2..1000, with a latent size of at least 2, and without conditional"),
    (["train", "--clusters", "500", "--n-real", "100"], "500 clusters need at least as many training images, and there are 100"),
    (["benchmark", "--out", "afile"], "afile is a file: --out names the benchmark's folder"),
    (["generate", "--out", "afile/s.h5"], "afile is a file"),
    (["evaluate", "--out", "afile/e.json"], "afile is a file"),
    (["evaluate", "afile", "--out", "afile", "--overwrite"], "--out afile: the figures are JSON, name it .json"),
    (["evaluate", "--labeller", "c.pt", "--out", "c.json", "--overwrite"], "--out c.json is the sha256 sidecar of an input"),
    (["generate", "--out", "runs/../escaped/s.h5"], "escaped: no such folder"),
    (["benchmark", "--out", "//"], "--out '//' names no file or folder of its own"),
    (["classify", "--n-real", "10", "--out", "missing/c.pt"], "missing: no such folder"),
    (["generate", "--out", "missing/s.h5"], "missing: no such folder"),
    (["train", "--out", "missing/run"], "missing: no such folder"),
    (["benchmark", "--out", ""], "--out '.' names no file or folder of its own"),
    (["interpolate", "--digit-grid", "--digit", "3"], "--digit-grid draws every digit: leave out --digit"),
    (["semi-supervised", "--steps", "50"], "steps must be in 100..1,000,000, got 50"),
    (["semi-supervised", "--rounds", "11"], "rounds must be in 0..10, got 11"),
    (["semi-supervised", "--round-epochs", "0"], "round-epochs must be in 1..1,000, got 0"),
    (["semi-supervised", "--n-real", "55000"], "n-real must be in 1..54,999 (the rest of the training pool is learnt without labels)"),
    (["semi-supervised", "--n-real", "0"], "n-real must be in 1..54,999"),
    (["semi-supervised", "--device", "tpu"], "device 'tpu' is not available"),
    (["semi-supervised", "--generator", "g.pt", "--out", "g.pt", "--overwrite"], "--out g.pt would replace the generator g.pt"),
    (["semi-supervised", "--generator", "g.pt", "--out", "g.json", "--overwrite"], "g.json: name the checkpoint .pt"),
    (["semi-supervised", "--out", "afile/s.pt"], "afile is a file"),
    (["semi-supervised", "--out", "s.json"], "s.json: name the checkpoint .pt"),
    (["classify", "--out", "runs/c"], "runs/c: name the checkpoint .pt (its sidecar, a .json, is written beside it)"),
    (["semi-supervised", "--out", "."], ". is a folder: name a file"),
    (["semi-supervised", "--generator", ROOT / "augment/weights/generator-conditional.pt"],
     "conditional; the semi-supervised GAN needs an unconditional generator"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("in the way")
    monkeypatch.setattr("torchvision.datasets.utils.download_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1 and expected in result.output
    assert not (tmp_path / "nowhere").exists()  # a misspelt --data-dir is not created
    assert not (tmp_path / "missing").exists() and not (tmp_path / "escaped").exists()  # nor a misspelt output folder
    assert (tmp_path / "afile").read_text() == "in the way"


def test_info_prints_attributes_and_histogram(synthetic_file, test_digits):
    result = run("info", synthetic_file)
    assert result.exit_code == 0, result.output
    assert f"{synthetic_file}: 2,000 images" in result.output and "format: digitgen-synthetic" in result.output
    ones = test_digits.labels[:2000].eq(1).sum().item()
    assert f"  1: {ones:>8,}" in result.output and "/probs: float16 (2000, 10)" in result.output


def test_info_bins_the_confidence(tmp_path):
    confidence = np.array([0.3, 0.6, 0.95, 0.95, 0.995, 0.9995, 1.0], np.float32)
    probs = np.full((7, 10), 0.01, np.float32)
    with SyntheticWriter(tmp_path / "c.h5", synthetic_attrs()) as w:
        w.append(torch.zeros(7, 28, 28, dtype=torch.uint8), np.zeros(7, np.uint8), confidence, probs)
    result = run("info", tmp_path / "c.h5")
    assert result.exit_code == 0, result.output
    counts = [int(line.split()[2]) for line in result.output.splitlines() if line.startswith("  [")]
    assert counts == [1, 1, 2, 1, 2]


def test_script_and_console_entry_points_answer_help():
    for command in ([sys.executable, "cli.py", "--help"], [str(Path(sys.executable).parent / "digitgen"), "classify", "--help"]):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and "Usage" in done.stdout, done.stderr


def test_demo_refuses_a_folder_with_something_in_it(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run("demo", "--out", tmp_path)
    assert result.exit_code == 2 and "is not an empty folder" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def test_world_size_without_torchrun_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--n-real", "100"], env={"WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT not set" in result.output


def test_benchmark_without_a_pool_draws_one_from_the_bundled_generator(tmp_path):
    out = tmp_path / "bench"
    result = run("benchmark", "--sizes", 20, "--ratios", 1, "--seeds", 1, "--min-steps", 5, "--min-confidence", 0,
                 "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"drawing a pool of 10,000 digits from the bundled generator into {out / 'pool.h5'}" in result.output
    rows = (out / "rows.csv").read_text().splitlines()
    assert len(rows) == 1 + 5  # header; real, classical, synthetic, synthetic+classical, pseudo-real
    assert "generator sha256" in (out / "report.md").read_text()
    again = run("benchmark", "--sizes", 20, "--ratios", 1, "--seeds", 1, "--min-steps", 5, "--min-confidence", 0,
                "--out", out)
    assert again.exit_code == 0 and "drawing a pool" not in again.output and len(again.output) > 0


def test_classify_never_writes_over_a_json_it_did_not_write(tmp_path):
    (tmp_path / "c.json").write_text("precious")
    result = run("classify", "--n-real", 20, "--min-steps", 5, "--epochs", 1, "--out", tmp_path / "c.pt")
    assert result.exit_code == 2 and "c.json already exists" in result.output
    assert (tmp_path / "c.json").read_text() == "precious" and not (tmp_path / "c.pt").exists()
    result = run("classify", "--n-real", 20, "--out", tmp_path / "x.json")
    assert result.exit_code == 2 and "name the checkpoint .pt" in result.output


def test_a_training_that_diverges_is_one_line_and_exit_code_1(tmp_path, monkeypatch):
    nan = lambda first, *rest, **kw: first.sum() * float("nan")  # noqa: E731  the loss of a training gone NaN
    monkeypatch.setattr("torch.nn.functional.cross_entropy", nan)
    result = run("classify", "--n-real", 20, "--min-steps", 5, "--epochs", 1, "--out", tmp_path / "c.pt")
    assert result.exit_code == 1
    assert result.output.endswith("\nerror: training diverged at step 5 (loss nan, peak learning rate 0.003)\n")
    monkeypatch.setattr("augment.ssgan.discriminator_loss", nan)
    result = run("semi-supervised", "--steps", 100, "--out", tmp_path / "s.pt")
    assert result.exit_code == 1
    assert result.output.endswith("\nerror: the semi-supervised GAN's training diverged at step 100\n")
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no lock file


def test_a_checkpoint_being_written_is_refused_to_a_second_run(tmp_path):
    out = tmp_path / "c.pt"
    release = lock_output(out.with_suffix(".json"))  # as a first run holds it while it trains
    for command in (["classify", "--n-real", 20, "--out", out], ["semi-supervised", "--out", out.with_suffix(".pth")]):
        result = run(*command)
        assert result.exit_code == 2 and result.output == (f"error: {out.with_suffix('.json')} is being written by "
                                                           f"another process: wait for it to end, or choose another output\n")
    release()
    result = run("classify", "--n-real", 20, "--min-steps", 5, "--epochs", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.pt"]  # and its own lock is gone


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.argv = ["digitgen"] + sys.argv[1:]
from cli import app
app()
"""


@pytest.mark.parametrize("args", [["generate", "--n", "5000", "--min-confidence", "0", "--overwrite"],
                                  ["classify", "--n-real", "100", "--epochs", "1", "--min-steps", "5", "--overwrite"]])
def test_a_full_disk_is_one_error_line_and_the_previous_file_intact(tmp_path, args):
    out = tmp_path / ("x.h5" if args[0] == "generate" else "x.pt")
    out.write_text("the previous file")
    done = subprocess.run([sys.executable, "-c", FULL_DISK, *args, "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr == f"error: {out}: File too large\n", done.stderr[-2000:]
    assert out.read_text() == "the previous file" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_sigterm_during_generate_leaves_no_file_behind(tmp_path):
    out = tmp_path / "g.h5"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "digitgen"), "generate", "--n", "500000",
                             "--min-confidence", "0", "--out", str(out), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".g.h5.lock").exists() and time.monotonic() < deadline:  # it is drawing
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no half file, no temporary, no lock
