"""One self-contained HTML page for any folder the commands write: a GAN run, evaluate JSONs, synthetic HDF5
datasets, a benchmark, other figures. Every image is embedded as a data: URI and there is no external CSS or
script, so the page opens offline, can be mailed or archived, and never fetches anything."""

import base64
import html
import io
import itertools
import json
import math
import re
from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure  # drawn without pyplot: a notebook keeps its own backend
import numpy as np
import pandas as pd

from augment.quality import METRIC_ROWS
from augment.trainer import fid_summary
from data import synthetic
from data.errors import InputError, prepare_output
from data.files import write_atomic

MIME = {".png": "image/png", ".gif": "image/gif"}
EARLIER_GRIDS = 4  # small sample grids shown before the last, large one
EVALUATE_ROWS = (("samples drawn", "n", ","), *METRIC_ROWS)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 1em auto; padding: 0 1em; color: #222; }
section { border-top: 1px solid #ccc; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; overflow-wrap: anywhere; }
td:first-child { white-space: nowrap; }
td.right, th.right { text-align: right; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
figure.grid { max-width: 48%; }  /* the last grid and the GIF side by side */
.grid img { image-rendering: pixelated; }
.small img { width: 200px; }
code { background: #f2f2f2; padding: 0 0.2em; }
"""


def write_report(folder: Path, out: Path | None = None, overwrite: bool = False) -> Path:
    """Write the report of `folder` (default `folder/report.html`) and return its path. Known files are looked
    for in the folder and in its subfolders one level down (a demo folder holding runs and a benchmark)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    out = Path(out) if out else folder / "report.html"
    prepare_output(out, overwrite)
    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    used: set[Path] = set()  # figures a section shows, so "Other figures" does not repeat them
    sections = []
    for place in places:
        prefix = "" if place == folder else f"{place.name}/: "
        for make in (_train_run, _evaluations, _datasets, _benchmark):
            try:
                sections += [_section(prefix + title, body) for title, body in make(place, used)]
            except (ValueError, KeyError, TypeError, IndexError, RecursionError, InputError) as e:  # not ours, or damaged
                problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                sections.append(_section(prefix + f"skipped: {make.__name__.strip('_')}",
                                         f"<p>{html.escape(problem)}</p>"))
    others = [p for place in places for p in sorted(place.iterdir()) if p.suffix in MIME and p not in used and _plain(p)]
    if others:
        sections.append(_section("Other figures", "".join(_figure(p, str(p.relative_to(folder))) for p in others)))
    if not sections:
        raise InputError(f"{folder}: nothing to report (no GAN run, evaluate JSON, .h5 dataset, benchmark or figure "
                         "in it or one level down)")
    name = folder.resolve().name
    written = datetime.now().astimezone().isoformat(timespec="seconds")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>digitgen report: '
            f"{html.escape(name)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>digitgen report: {html.escape(name)}</h1><p>{html.escape(str(folder.resolve()))}, written "
            f"{html.escape(written)}</p>\n" + "\n".join(sections) + "\n</body></html>\n")
    write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out


def _train_run(place: Path, used: set[Path]) -> list[tuple[str, str]]:
    """`digitgen train --out DIR`: its sidecar, best FID against the floor, the GIF, sample grids and curves."""
    grids = sorted(p for p in (place / "samples").glob("step_*.png") if _plain(p) and p.stem[5:].isdigit())
    known = {name: place / name for name in ("generator.json", "metrics.csv", "progress.gif", "losses.png", "fid.png")}
    if not grids and not any(_plain(p) for p in known.values()):
        return []
    used.update(grids, known.values())
    body = []
    sidecar = _json(known["generator.json"])
    if sidecar:
        body.append(_table([(k, _describe(v)) for k, v in sidecar.items()]))
    quality = fid_summary(known["metrics.csv"]) if _plain(known["metrics.csv"]) else None
    if quality:
        log = pd.read_csv(known["metrics.csv"])
        rows = [("best FID", f"{quality['best_fid']:.2f}"), ("at step", f"{quality['best_step']:,}"),
                ("after minutes", f"{quality['best_minutes']:.1f}"), ("real floor", f"{quality['floor']:.2f}"),
                ("best / floor", f"{quality['best_fid'] / quality['floor']:.1f}x"),
                ("minutes to 10x floor", "not reached" if quality["minutes_to_10x"] is None
                 else f"{quality['minutes_to_10x']:.1f}")]
        if "class_gap" in log:
            gap = log.loc[log["step"] == quality["best_step"], "class_gap"].iloc[-1]
            rows.append(("largest class-share gap at best, points", f"{gap:.1f}"))
        body.append(_table(rows))
    if grids:
        body.append(_figure(grids[-1], f"samples at step {_step(grids[-1]):,} (last)", "grid"))
    if _plain(known["progress.gif"]):
        body.append(_figure(known["progress.gif"], "training progress, a frame per sample grid", "grid"))
    earlier = grids[:-1]
    body += [_figure(p, f"step {_step(p):,}", "grid small")
             for p in earlier[::max(1, math.ceil(len(earlier) / EARLIER_GRIDS))]]
    body += [_figure(known[n], caption) for n, caption in (("losses.png", "losses"), ("fid.png", "FID"))
             if _plain(known[n])]
    return [("GAN training run", "".join(body))]


def _evaluations(place: Path, used: set[Path]) -> list[tuple[str, str]]:
    """`digitgen evaluate --out X.json`: the samples' metrics beside the real floor's, and the label shares."""
    found = []
    for path in sorted(filter(_plain, place.glob("*.json"))):
        result = _json(path)
        if not (result and "source" in result and all(isinstance(result.get(k), dict) for k in ("samples", "floor"))):
            continue
        samples, floor = result["samples"], result["floor"]
        rows = [(name, _number(samples.get(key), fmt), _number(floor.get(key), fmt)) for name, key, fmt in EVALUATE_ROWS]
        body = (f"<p>source: <code>{html.escape(str(result['source']))}</code></p>"
                + _table(rows, ("", "samples", "real floor"), (False, True, True)))
        shares = {name: r["label_shares"] for name, r in (("samples", samples), ("real floor", floor))
                  if r.get("label_shares")}
        if shares:
            body += _chart([("predicted label shares", [str(c) for c in range(10)], shares)], "label shares")
        found.append((f"Evaluation {path.name}", body))
    return found


def _datasets(place: Path, used: set[Path]) -> list[tuple[str, str]]:
    """HDF5 synthetic datasets: attributes, class and confidence histograms, and the grid `digitgen show` drew."""
    found = []
    for path in sorted(filter(_plain, [*place.glob("*.h5"), *place.glob("*.hdf5")])):
        info = synthetic.summary(path)
        rows = [("rows", f"{info['rows']:,}"), *((k, _describe(v)) for k, v in info["attrs"].items()),
                ("columns", ", ".join(f"{k} {dtype} {shape}" for k, (dtype, shape) in info["columns"].items())),
                ("confidence min / median / max", " / ".join(f"{q:.3f}" for q in info["confidence_quantiles"]))]
        edges = synthetic.CONFIDENCE_EDGES
        bins = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])]
        body = _table(rows) + _chart([("class counts", [str(c) for c in range(10)], {"rows": info["class_counts"]}),
                                      ("confidence counts", bins, {"rows": info["confidence_counts"]})], "histograms")
        grid = path.with_suffix(".png")
        if _plain(grid):
            used.add(grid)
            body += _figure(grid, grid.name, "grid")
        found.append((f"Synthetic dataset {path.name}", body))
    return found


def _benchmark(place: Path, used: set[Path]) -> list[tuple[str, str]]:
    """`digitgen benchmark --out DIR`: report.md as HTML (summary.csv when it is missing) and accuracy.png."""
    md, csv, png = place / "report.md", place / "summary.csv", place / "accuracy.png"
    if not any(_plain(p) for p in (md, csv, png)):
        return []
    used.add(png)
    body = ""
    if _plain(md):
        body = _markdown(md.read_text(encoding="utf-8"))
    elif _plain(csv):
        table = pd.read_csv(csv)
        body = _table(table.itertuples(index=False), tuple(table.columns))
    if _plain(png):
        body += _figure(png, "test accuracy against the synthetic ratio")
    return [("Augmentation benchmark", body)]


def _markdown(text: str) -> str:
    """The Markdown report.md uses, no more: # headings, - bullets, pipe tables (---: aligns right),
    paragraphs and `code`."""
    def kind(line: str) -> str:
        line = line.strip()
        return ("blank" if not line else "table" if line.startswith("|") else "bullets" if line.startswith("- ")
                else "heading" if line.startswith("#") else "text")

    parts = []
    for block, lines in itertools.groupby(text.splitlines(), kind):
        lines = [line.strip() for line in lines]
        if block == "heading":
            for line in lines:
                level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # below the page's h1 and section h2
                parts.append(f"<h{level}>{_inline(line.lstrip('#'))}</h{level}>")
        elif block == "bullets":
            parts.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        elif block == "text":
            parts.append(f"<p>{_inline(' '.join(lines))}</p>")
        elif block == "table":
            rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
            rule = len(rows) > 1 and all(re.fullmatch(r":?-+:?", cell) for cell in rows[1])
            right = [cell.endswith(":") for cell in rows[1]] if rule else []
            parts.append(_table(rows[2:] if rule else rows[1:], rows[0], right, inline=True))
    return "\n".join(parts)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text.strip()))


def _table(rows, header=None, right=(), inline: bool = False) -> str:
    """Rows of cells as an HTML table; `right` says which columns align right (numbers)."""
    cell = _inline if inline else (lambda v: html.escape(str(v)))

    def line(cells, tag):
        return "<tr>" + "".join(f'<{tag}{" class=right" if i < len(right) and right[i] else ""}>{cell(v)}</{tag}>'
                                for i, v in enumerate(cells)) + "</tr>"
    head = f"<thead>{line(header, 'th')}</thead>" if header else ""
    return f"<table>{head}<tbody>{''.join(line(r, 'td') for r in rows)}</tbody></table>"


def _chart(panels: list[tuple[str, list[str], dict[str, list[float]]]], alt: str) -> str:
    """Bar charts side by side (title, x labels, one bar series per entry), drawn to an in-memory PNG."""
    fig = Figure(figsize=(5 * len(panels), 3))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, labels, series) in zip(axes[0], panels):
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            ax.bar(np.arange(len(labels)) + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return f"<figure>{_img(buffer.getvalue(), 'image/png', alt)}</figure>"


def _figure(path: Path, caption: str, css: str = "") -> str:
    return (f'<figure class="{css}">{_img(path.read_bytes(), MIME[path.suffix], caption)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _img(data: bytes, mime: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _plain(path: Path) -> bool:
    """Only regular files inside the folder are read: a symlink could point out of it, a FIFO would hang."""
    return path.is_file() and not path.is_symlink()


def _json(path: Path) -> dict | None:
    """A JSON object, or None for a missing, unreadable or other-shaped file (not every .json is ours)."""
    if not _plain(path):
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _describe(value) -> str:
    """A table cell: a dict as 'key value' pairs on one line (nested dicts, repeated elsewhere, left out)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if not isinstance(v, dict))
    return json.dumps(value) if isinstance(value, list) else str(value)


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _step(grid: Path) -> int:
    return int(grid.stem.split("_")[1])
