"""Progress bars for long work, readable on a terminal and in a log file alike."""

import sys

from tqdm import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm progress bar. When it does not write to a terminal (a log file, CI) it redraws
    every 30 s rather than ten times a second, so that a redirected log stays readable."""
    if not getattr(kwargs.get("file") or sys.stderr, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)
