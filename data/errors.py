"""The one exception type that means "the user gave us something we cannot use"."""


class InputError(Exception):
    """Bad input: the CLI prints its message as one line and exits with code 2."""
