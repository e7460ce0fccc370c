"""Errors a user can fix (a bad path, a corrupt file, a wrong checkpoint).

Scripts catch `MinigenError`, print its message as one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""


class MinigenError(Exception):
    """A problem with the user's input, stated in one line with what to do about it."""


class DataError(MinigenError):
    """A data set that cannot be found, read, downloaded or resized as asked."""


class CheckpointError(MinigenError):
    """A checkpoint that is missing, corrupt, carries code, or belongs to another model."""
