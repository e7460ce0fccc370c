"""Seeding, device choice and progress bars, each done in one place and said out loud."""

import os
import random
import sys

import numpy as np
import torch
from tqdm import tqdm


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm progress bar. When it does not write to a terminal (a log file, CI) it redraws
    every 30 s rather than ten times a second, so that a redirected log stays readable."""
    if not getattr(kwargs.get("file") or sys.stderr, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)


def pick_device(requested: str | None = None) -> tuple[torch.device, str]:
    """Return (device, reason). Preference: cuda > mps > cpu, unless `requested` names one.

    The reason is a short sentence for the start-up banner, e.g.
    "cpu: no CUDA or MPS device found (2 threads)".
    """
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            from .errors import MinigenError
            raise MinigenError(f"--device {requested} was asked for but torch sees no CUDA device; "
                               "leave --device out to use the CPU")
        return device, f"{device}: asked for with --device"
    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda: {torch.cuda.get_device_name(0)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), "mps: Apple GPU found, no CUDA"
    threads = torch.get_num_threads()
    return torch.device("cpu"), f"cpu: no CUDA or MPS device found ({threads} threads, {os.cpu_count()} cores)"


def count_flops(model: torch.nn.Module, *inputs) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()


class GracefulStop:
    """Ctrl-C asks a training loop to stop at the end of the current step (check `.asked`);
    a second Ctrl-C raises KeyboardInterrupt at once. Restores the previous handler on exit.

        with GracefulStop(say=bar.write) as stop:
            while ...:
                ...one step...
                if stop.asked: save and return
    """

    def __init__(self, say=print):
        self.asked, self.say = False, say

    def _handler(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        if self.say:
            self.say("Ctrl-C: finishing this step and saving (Ctrl-C again to stop at once)")

    def __enter__(self):
        import signal
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal
        signal.signal(signal.SIGINT, self._previous)
        return False


def resident_memory_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far (resource), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
