"""The one error type that front ends turn into a single clean line."""


class SlurmmlError(Exception):
    """A problem the user can fix, explained in one line (no traceback needed)."""
