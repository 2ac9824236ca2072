"""The HTML report: one self-contained page, checked in the HTML and by rendering it in headless Chromium."""

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from augment import trainer
from augment.html_report import write_report
from augment.models import GanSpec
from augment.plots import plot_fid
from augment.quality import Quality
from classifier import report
from cli import app
from conftest import write_synthetic
from data.errors import InputError

TINY = trainer.GanConfig(spec=GanSpec(nz=16, g_width=16, d_width=16), epochs=2, batch_size=32, seed=5, sample_every=2,
                         eval_every=0)
IMAGES = 13  # GIF, last grid, 4 earlier grids, losses, FID; label shares; histograms, show's grid; accuracy; stray
# After the load event, writes "loaded/total" images into the DOM, where --dump-dom prints it.
PROBE = ("<script>addEventListener('load', () => { const all = [...document.images]; document.body.dataset.loaded = "
         "all.filter(i => i.complete && i.naturalWidth > 0).length + '/' + all.length; });</script>")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, train, test_digits):
    """A demo folder: a tiny real GAN run at the top, an evaluate JSON, an HDF5 dataset with the grid `show`
    draws, a benchmark one level down, and a stray figure."""
    folder = tmp_path_factory.mktemp("report") / "demo"
    trainer.train(trainer.start(folder, TINY, train.subset(torch.arange(96)), resume=False), progress=False)
    # The FID probe needs all of MNIST train, so metrics.csv is written here, in the trainer's columns.
    pd.DataFrame({"step": [0, 3, 6], "epoch": [0.0, 1.0, 2.0], "minutes": [0.0, 0.1, 0.2], "fid": [900.0, 400.0, 450.0],
                  "floor": 1.8, "class_gap": [60.0, 20.0, 25.0]}).to_csv(folder / "metrics.csv", index=False)
    plot_fid(folder / "metrics.csv", folder / "fid.png")

    samples = Quality(n=200, fid=400.0, kid=30.0, kid_std=2.0, precision=0.5, recall=0.6,
                      label_shares=[0.19] + [0.09] * 9, label_entropy_bits=3.3, cas=0.9, label_noise=0.12)
    floor = Quality(n=200, fid=2.5, kid=0.1, kid_std=0.01, precision=0.85, recall=0.87, label_shares=[0.1] * 10,
                    label_entropy_bits=3.32, cas=None, label_noise=0.005)
    (folder / "eval.json").write_text(json.dumps({"source": "generator.pt", "samples": samples.as_dict(),
                                                  "floor": floor.as_dict()}, indent=2))  # as evaluate --out writes it

    h5 = write_synthetic(folder / "synth.h5", test_digits.subset(np.arange(200)))
    assert CliRunner().invoke(app, ["show", str(h5)]).exit_code == 0  # synth.png beside it

    bench = folder / "benchmark"
    bench.mkdir()
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{"size": size, "variant": variant, "ratio": ratio, "seed": seed,
                          "accuracy": 0.9 + 0.01 * ratio + 0.005 * rng.random()}
                         for size in (100, 1000) for seed in range(3)
                         for variant, ratio in (("real", 0), ("classical", 0), ("synthetic", 1), ("synthetic", 2))])
    table = report.summarise(rows)
    table.to_csv(bench / "summary.csv", index=False)
    (bench / "report.md").write_text(report.markdown(table, "# Augmentation benchmark (mnist)\n\n- Pool: `synth.h5`."))
    report.plot(table, bench / "accuracy.png")

    Image.new("RGB", (120, 60), "teal").save(folder / "stray.png")
    return folder


@pytest.fixture(scope="module")
def page(demo):
    return write_report(demo)


def test_report_has_a_section_per_kind_and_embeds_every_image(demo, page):
    assert page == demo / "report.html"
    text = page.read_text()
    for title in ("GAN training run", "Evaluation eval.json", "Synthetic dataset synth.h5",
                  "benchmark/: Augmentation benchmark", "Other figures"):
        assert f"<h2>{title}</h2>" in text
    assert "best FID</td><td>400.00" in text and "real floor</td><td>1.80" in text  # best FID vs floor
    assert "<td>CAS</td><td class=right>0.9000</td><td class=right>-</td>" in text  # a missing floor CAS
    assert "<th class=right>real labelled</th>" in text and "<td class=right>1,000</td>" in text  # the pipe table
    assert "<li>Pool: <code>synth.h5</code>.</li>" in text and "samples at step 6 (last)" in text
    sources = re.findall(r'<img alt="[^"]*" src="([^"]*)"', text)
    assert len(sources) == text.count("<img") == text.count("src=") == IMAGES
    assert all(re.fullmatch(r"data:image/(png|gif);base64,[A-Za-z0-9+/=]+", s) for s in sources)
    assert sum(s.startswith("data:image/gif") for s in sources) == 1 and "stray.png" in text
    assert not re.search(r"https?://|<link|<script|url\(", text)  # nothing to fetch


def test_report_renders_in_chromium_with_every_image_loaded(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    assert f'data-loaded="{IMAGES}/{IMAGES}"' in chromium(probe, tmp_path, "--dump-dom")

    shot = tmp_path / "report.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (3000, 1200, 3)
    assert (pixels.min(axis=2) < 200).mean() > 0.1  # text, digit grids and plots, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 300  # the plots' colours and antialiased text


def test_a_folder_with_nothing_known_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no figures here")
    with pytest.raises(InputError, match="nothing to report"):
        write_report(tmp_path)


def test_an_existing_report_is_kept_unless_overwrite(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "figure.png")
    out = tmp_path / "old.html"
    out.write_text("old")
    with pytest.raises(InputError, match="already exists"):
        write_report(tmp_path, out)
    assert out.read_text() == "old"
    assert write_report(tmp_path, out, overwrite=True) == out and "figure.png" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "old.html"]  # no temporary file left


def chromium(page: Path, tmp_path: Path, *options: str) -> str:
    """Run headless Chromium on the page; CI installs it (.ci/run), elsewhere its absence skips the test."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH, and CI must render the report: .ci/run installs it")
        pytest.skip("chromium is not on PATH (apt-get install chromium) to render the report")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'chromium'}", *options, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_links_fifos_and_damaged_files_are_skipped_not_followed(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not really: private bytes")
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)
    (folder / "leak.png").symlink_to(secret)
    os.mkfifo(folder / "pipe.png")
    (folder / "samples" / "step_abc.png").write_text("not a step")
    (folder / "metrics.csv").write_text("step,epoch,minutes,fid,floor\n1,1,1,abc,2\n")
    (folder / "e.json").write_text('{"source": "x", "samples": {"fid": "abc"}, "floor": {}}')
    (folder / "deep.json").write_text("[" * 200_000)
    (folder / "plain.png").write_bytes(b"\x89PNG a figure of the run")
    page = write_report(folder).read_text()  # no hang on the FIFO, no traceback on the damaged files
    assert base64.b64encode(secret.read_bytes()).decode() not in page  # the link out of the folder is not followed
    assert base64.b64encode(b"\x89PNG a figure of the run").decode() in page and "pipe.png" not in page
    assert "skipped: evaluations" in page and "best FID" not in page
