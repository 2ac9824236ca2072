"""The one exception type that means "the user gave us something we cannot use", and the output check
every command makes with it."""

import os
from pathlib import Path


class InputError(Exception):
    """Bad input: the CLI prints its message as one line and exits with code 2."""


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Nothing already written is replaced unless the user asked for it."""
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass --overwrite to replace it")


def prepare_output(path: Path, overwrite: bool) -> None:
    """Before any long work: the output may be replaced (or does not exist), and its folder exists (made if
    missing) and is writable, so hours of training never end in an unwritable path."""
    refuse_existing(path, overwrite)
    if path.is_dir():
        raise InputError(f"{path} is a folder: name a file")
    parent = path.parent
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise InputError(f"{above} is a file, so {path} cannot be written")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{parent}: cannot make this folder ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"{parent}: not writable")
