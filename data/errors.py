"""The one exception type that means "the user gave us something we cannot use", and the output check
every command makes with it."""

from pathlib import Path


class InputError(Exception):
    """Bad input: the CLI prints its message as one line and exits with code 2."""


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Nothing already written is replaced unless the user asked for it."""
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass --overwrite to replace it")
