"""Pictures of digits: PNG grids and animated GIFs."""

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from data.errors import InputError, prepare_output
from data.pixels import to_model
from data.synthetic import load_synthetic


def grid_image(images: torch.Tensor, nrow: int, scale: int = 2) -> Image.Image:
    """uint8 digits (N, 28, 28) -> a PIL grid, white digits on black, upscaled `scale` times."""
    grid = make_grid(to_model(images), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1), pad_value=0.3)
    picture = Image.fromarray(grid[0].mul(255).round().byte().numpy(), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, nrow).save(path)
    return path


def save_gif(frames: list[Image.Image], path: Path, ms_per_frame: int = 200) -> Path:
    """An animated GIF that loops forever and holds its last frame a little longer."""
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 5]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def labelled_rows(rows: list[torch.Tensor], names: list[str], columns: int, scale: int = 2) -> Image.Image:
    """A grid with one row of up to `columns` digits per entry of rows, its name written on the left."""
    margin = 24 * scale
    cell = 32 * scale
    picture = Image.new("L", (margin + columns * cell, len(rows) * cell), color=0)
    draw = ImageDraw.Draw(picture)
    for r, (images, name) in enumerate(zip(rows, names)):
        draw.text((4 * scale, r * cell + cell // 3), name, fill=255)
        if len(images):
            picture.paste(grid_image(images[:columns], columns, scale), (margin, r * cell))
    return picture


def show(file: str | Path, out: str | Path | None = None, per_class: int = 16, overwrite: bool = False) -> Path:
    """A PNG grid of a synthetic dataset: a row per pseudo-label, images in file (drawing) order."""
    file = Path(file)
    out = Path(out) if out else file.with_suffix(".png")
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: choose a .png output")
    prepare_output(out, overwrite)
    if not 1 <= per_class <= 200:
        raise InputError(f"per-class must be in 1..200, got {per_class}")
    data = load_synthetic(file)
    rows, names = [], []
    for c in range(10):
        idx = (data.labels == c).nonzero().squeeze(1)[:per_class]
        rows.append(data.images[idx])
        names.append(f"{c}" if len(idx) else f"{c} -")
    labelled_rows(rows, names, per_class).save(out)
    return out
