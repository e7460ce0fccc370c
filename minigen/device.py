"""Where and how reproducibly a run computes: the device, chosen and said out loud, the random
seeds, and the memory the process holds."""

import os
import random

import numpy as np
import torch

from .errors import MinigenError


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def allow_tf32() -> None:
    """fp32 matrix products and convolutions on a CUDA GPU's tensor cores as TF32 (fp32's range,
    a 10-bit mantissa, as bf16 has 7). PyTorch does this for convolutions already, not for
    matmuls (attention, linear layers). Measured on an H200 (docs/gpu.md): the cifar
    U-Net's eager training step at 1764 images/s with TF32 against 717 in full fp32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def pick_device(requested: str | None = None, tf32: bool = True) -> tuple[torch.device, str]:
    """Return (device, reason). Preference: cuda > mps > cpu, unless `requested` names one.
    On CUDA, fp32 runs as TF32 (`allow_tf32`) unless tf32 is False (the benchmark times both).

    The reason is a short sentence for the start-up banner, e.g.
    "cpu: no CUDA or MPS device found (2 threads)".
    """
    device, reason = _choose(requested)
    if device.type == "cuda" and tf32:
        allow_tf32()
    return device, reason


def _choose(requested: str | None) -> tuple[torch.device, str]:
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise MinigenError(f"--device {requested}: not a device; use cpu, cuda, cuda:N or mps") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise MinigenError(f"--device {requested}: minigen runs on cpu, cuda, cuda:N or mps")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise MinigenError(f"--device {requested} was asked for but torch sees no CUDA device; "
                               "leave --device out to use the CPU")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise MinigenError(f"--device {requested}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise MinigenError(f"--device {requested} was asked for but this machine has no MPS device; "
                               "leave --device out to use the CPU")
        return device, f"{device}: asked for with --device"
    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda: {torch.cuda.get_device_name(0)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), "mps: Apple GPU found, no CUDA"
    threads = torch.get_num_threads()
    return torch.device("cpu"), f"cpu: no CUDA or MPS device found ({threads} threads, {os.cpu_count()} cores)"


def resident_memory_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far (resource), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
