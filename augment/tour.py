"""The five-minute tour: the bundled models take a newcomer from nothing to a report, in one folder."""

from dataclasses import dataclass
from pathlib import Path

from augment import commands
from augment.explore import interpolate
from augment.html_report import write_report
from augment.images import show
from augment.pipeline import Report
from data.errors import InputError, check_folder_of

SYNTHETIC = 20_000  # pseudo-labelled digits written to HDF5
EVALUATED = 5_000  # samples behind the quality figures (CAS trains on them)


@dataclass(frozen=True)
class Demo:
    folder: Path
    report: Path
    generated: Report
    evaluation: commands.Evaluation
    benchmark: commands.Benchmark


def demo(out: str | Path = "runs/demo", overwrite: bool = False, data_dir: str | Path | None = None,
         device: str = "auto", log=print) -> Demo:
    """generate -> sample grids -> evaluate -> benchmark --quick -> report, all into `out` (overwrite: replace
    what an earlier demo wrote there)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise InputError(f"{out} exists and is not an empty folder: choose another --out, or pass --overwrite")
    check_folder_of(out)
    out.mkdir(exist_ok=True)
    log(f"1/5 generate: {SYNTHETIC:,} digits from the bundled generator, labelled by the reference classifier")
    generated = commands.generate(out=out / "synthetic.h5", n=SYNTHETIC, overwrite=overwrite, data_dir=data_dir,
                                  device=device, progress=False)
    log("2/5 sample grids: a row per label, and latent interpolations")
    show(out / "synthetic.h5", overwrite=overwrite)
    interpolate(out=out / "interpolation.png", overwrite=overwrite)
    log(f"3/5 evaluate: {EVALUATED:,} samples beside real digits (FID, precision/recall, CAS, label noise)")
    evaluation = commands.evaluate(n=EVALUATED, out=out / "evaluate.json", overwrite=overwrite, data_dir=data_dir,
                                   device=device, progress=False, log=log)
    log("4/5 benchmark --quick: 100 and 1,000 real labels, with and without GAN samples (2 seeds)")
    bench = commands.benchmark(out=out / "benchmark", quick=True, overwrite=overwrite, data_dir=data_dir, device=device,
                               log=log, on_row=lambda r: log(f"  {r['size']:>5,} real labels  {r['variant']:<20} seed "
                                                             f"{r['seed']}: {r['accuracy']:.2%}"))
    log("5/5 report")
    return Demo(out, write_report(out, overwrite=overwrite), generated, evaluation, bench)
