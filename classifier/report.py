"""The benchmark's answer: mean +- std per row, the gain over real-only with a 95% confidence interval
(paired by seed: the same seed draws the same labelled subset), as CSV, Markdown and a plot."""

import json
from pathlib import Path

from matplotlib.figure import Figure  # drawn without pyplot: a notebook keeps its own backend
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from scipy import stats

from classifier.benchmark import VARIANTS, Sweep

ACCURACY_TICKS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999)


def describe_gan(attrs: dict) -> str:
    """How the pool's generator was trained, from the generator.json beside it (when still there)."""
    head = f"generator sha256 {attrs['generator_sha256'][:16]}..."
    sidecar = Path(attrs["config"].get("generator", "unknown")).with_suffix(".json")
    try:  # the path comes from inside the pool file: trust only the sidecar of the very generator that drew it
        if not sidecar.is_file():  # nor read anything but a plain file (a FIFO would hang)
            raise ValueError
        info = json.loads(sidecar.read_text())
        if info["sha256"] != attrs["generator_sha256"]:
            raise ValueError
        run, spec = info["run"], info["spec"]
        images = f"{run['n_real']:,} labelled" if run["n_real"] else "all 60,000"
        labels = "with their labels (conditional)" if spec["conditional"] else "without labels"
        if spec.get("clusters"):  # recorded only when on
            labels += f", self-conditioned on {spec['clusters']} k-means clusters"
        return f"{head}: {spec['arch']} GAN trained {info['step']:,} steps on {images} {run['dataset']} train images {labels}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{head} (no {sidecar} of that generator here: how it was trained is not known)"


def header(sweep: Sweep, pool: Path, attrs: dict, dataset: str, test_size: int, sources: dict | None = None,
           variants: frozenset = frozenset()) -> str:
    """What a reader must know to trust the table: the pool and its generator, the labeller, the budget, and
    how each extra variant among the table's `variants` was made."""
    selected = ("Generated with --min-confidence 0: no other labeller selected it." if not attrs["min_confidence"] else
                f"Caution: generated with --min-confidence {attrs['min_confidence']}, so labeller sha256 "
                f"{attrs['labeller_sha256'][:16]}... pre-selected it; generate with --min-confidence 0 for a clean comparison.")
    return "\n".join([
        f"# Augmentation benchmark ({dataset})", "",
        f"- Synthetic pool: `{pool}`, {describe_gan(attrs)}. {selected}",
        f"- Labeller: for each real size and seed, the `classical` row's classifier, trained on that labelled subset "
        f"alone, labels every synthetic and unlabelled real image; only those at confidence >= {sweep.min_confidence} "
        f"are mixed in.",
        f"- Budget: every classifier of a size takes the same number of steps of batch 128: {sweep.epochs} epochs of "
        f"the real subset, at least {sweep.min_steps}, whatever is mixed in. Tested on the {test_size:,} real test images.",
        "- Gain: paired by seed (a seed draws the same labelled subset in every row), t interval over the seeds of the "
        "last column.",
    ] + _sources(sources or {}, sweep, variants))


def _sources(settings: dict, sweep: Sweep, variants: frozenset) -> list[str]:
    lines = []
    if "conditional" in settings:
        c = settings["conditional"]
        lines.append(f"- Conditional GAN: per size and seed, a {c['gan']['spec']['arch']} conditional GAN trained for "
                     f"{c['gan_minutes']:g} minutes of training time on the labelled subset plus the labeller's labels "
                     f"(at confidence >= {c['gan']['min_confidence']}) of the rest of the training pool"
                     + (f", relabelled every {c['gan_relabel_every']} epochs by the classifier it improves"
                        if c.get("gan_relabel_every") else "") + "; kept in gans/.")
    if "filtered" in settings:
        lines.append(f"- Filtered: the pool's samples with realism >= {settings['filtered']['min_realism']:g} in the "
                     f"labeller's features, against {settings['filtered']['real_images']:,} unlabelled train images.")
    if "gan-discriminator" in settings:
        lines.append(f"- gan-discriminator: per size and seed, {settings['gan-discriminator']['steps']:,} steps of batch "
                     f"{settings['gan-discriminator']['batch']} x 3 (labelled, unlabelled, generated), not the size's budget; "
                     f"classical-matched is the classical row for as many steps."
                     + (f" Each then teaches {sweep.relabel_rounds} round(s) of self-training (+self-training): "
                        f"{sweep.epochs} epochs over the labelled subset plus every other train image its last model "
                        f"labels at confidence >= {sweep.min_confidence}, at least {sweep.min_steps} steps."
                        if "gan-discriminator+self-training" in variants else ""))
    return lines


def _paired(group: pd.DataFrame, base: pd.Series) -> tuple[float, float]:
    """Mean gain over the base row of the same size and seed, and the half-width of its 95% t interval."""
    gains = (group.set_index(["size", "seed"]).accuracy - base).dropna().to_numpy()
    n = len(gains)
    half = stats.t.ppf(0.975, n - 1) * gains.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    return (gains.mean() if n else np.nan), half


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (size, variant, ratio): accuracy mean and std over seeds, and the paired gains over the
    'real' row and over the 'classical' row (the choice a user actually faces) of the same size and seed."""
    real = rows[rows.variant == "real"].set_index(["size", "seed"]).accuracy
    classical = rows[rows.variant == "classical"].set_index(["size", "seed"]).accuracy
    lines = []
    for (size, variant, ratio), group in rows.groupby(["size", "variant", "ratio"], sort=False):
        gain, ci = _paired(group, real)
        over, over_ci = _paired(group, classical)
        lines.append({"size": size, "variant": variant, "ratio": ratio, "seeds": len(group),
                      "accuracy_mean": group.accuracy.mean(), "accuracy_std": group.accuracy.std(ddof=1),
                      "gain_mean": gain, "gain_ci95": ci, "over_classical_mean": over, "over_classical_ci95": over_ci})
    table = pd.DataFrame(lines)
    table["order"] = table.variant.map(list(VARIANTS).index)
    return table.sort_values(["size", "order", "ratio"]).drop(columns="order").reset_index(drop=True)


def _percent(mean: float, spread: float, signed: bool = False) -> str:
    if np.isnan(mean):
        return "-"
    text = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return text + ("" if np.isnan(spread) else f" +- {100 * spread:.2f}")


def markdown(table: pd.DataFrame, header: str) -> str:
    lines = [header, "", "| real labelled | augmentation | synthetic:real | test accuracy % (mean +- std) "
             "| gain over real-only, points (95% CI) | gain over classical, points (95% CI) | seeds |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in table.itertuples():
        gain = "-" if r.variant == "real" else _percent(r.gain_mean, r.gain_ci95, signed=True)
        over = "-" if r.variant in ("real", "classical") else _percent(r.over_classical_mean, r.over_classical_ci95,
                                                                        signed=True)
        lines.append(f"| {r.size:,} | {r.variant} | {r.ratio:g} | {_percent(r.accuracy_mean, r.accuracy_std)} "
                     f"| {gain} | {over} | {r.seeds} |")
    lines += ["", "Augmentations:"] + [f"- {name}: {text}" for name, text in VARIANTS.items()]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, png: Path) -> Path:
    """Accuracy (logit axis, so 90% and 99.5% both read) against the synthetic ratio, one colour per
    real size: solid synthetic, dashed synthetic + classical, each starting from its real-only point."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for i, (size, group) in enumerate(table.groupby("size")):
        colour = f"C{i}"
        for start, variant, style in (("real", "synthetic", "-"), ("classical", "synthetic+classical", "--")):
            line = pd.concat([group[group.variant == start], group[group.variant == variant]]).sort_values("ratio")
            if len(line):
                ax.errorbar(line.ratio, line.accuracy_mean, yerr=line.accuracy_std.fillna(0), fmt=style + "o",
                            color=colour, capsize=3, markersize=4,
                            label=f"{size:,} real" + (" + classical" if start == "classical" else ""))
    ax.set_yscale("logit")
    ax.yaxis.set_major_locator(FixedLocator(ACCURACY_TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:g}%"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("synthetic images per real image (0 = real only)")
    ax.set_ylabel("real test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100, format="png")
    return png
