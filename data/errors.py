"""The exception that means "the user gave us something we cannot use", the one for a training that diverged,
and the output check every command makes."""

import os
from pathlib import Path


class InputError(Exception):
    """Bad input: the CLI prints its message as one line and exits with code 2."""


class Diverged(Exception):
    """Training went NaN: not the input's fault, so the CLI prints its message as one line and exits with code 1,
    as `train` does when its losses diverge."""


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Nothing already written is replaced unless the user asked for it."""
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass --overwrite to replace it")


HOMES = (Path("runs"), Path("data") / "synthetic")  # the default outputs' folders: they and those in them are made


def prepare_output(path: Path, overwrite: bool) -> None:
    """Before any long work: the output file may be replaced (or does not exist) and can be written there, so
    hours of work never end in an unwritable path."""
    if path.is_dir():
        raise InputError(f"{path} is a folder: name a file")
    refuse_existing(path, overwrite)
    check_folder_of(path)


def check_folder_of(path: Path) -> None:
    """The folder that will hold `path` (a file, or a run's folder) exists and is writable. Only folders in the
    defaults' homes (runs/, data/synthetic/) are made: elsewhere a missing folder is more likely a typo."""
    if not path.name:  # ".", "/", "//" (and "", which arrives as ".")
        raise InputError(f"--out {str(path)!r} names no file or folder of its own")
    if path.is_dir():  # a run's or a sweep's folder that exists: what may go on in it is the command's to check
        return
    parent = path.parent
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise InputError(f"{above} is a file, so {path} cannot be written")
            break
    where = Path(os.path.abspath(parent))  # "runs/../x" is not in runs/
    if any(home == where or home in where.parents for home in map(Path, map(os.path.abspath, HOMES))):
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{parent}: cannot make this folder ({e.strerror})") from None
    if not parent.is_dir():
        raise InputError(f"{parent}: no such folder: make it first, or choose another --out")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{parent}: not writable")
