"""The error every bad input raises: the CLI prints its message on one line and exits 2."""


class InputError(ValueError):
    """Bad user input. The message names the file, the row or YAML path, the field, and what to do."""
