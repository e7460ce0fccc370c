"""Checkpoints: one file holding everything needed to resume a run or rebuild its model.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
    format      FORMAT_VERSION, so a later minigen can refuse or convert old files
    kind        what the model is ("ddpm", "gan", ...), checked on load
    config      the resolved config dataclass as a dict, so sample.py rebuilds the model from the file
    model       state_dict of the plain module (never the torch.compile or DDP wrapper,
                so keys never start with "_orig_mod." or "module.")
    ema, optimizer, scheduler   their state_dicts, when given
    others      more named state_dicts (a GAN's discriminator and its optimizer)
    step        optimizer steps taken
    rng         Python, NumPy and torch (CPU, CUDA) generator states, for exact resume
    extra       anything else a script wants back (e.g. fixed noise for progress grids)

Saving is atomic: the file is written beside its destination, flushed to disk, then
renamed over it, so a run killed while saving leaves the previous checkpoint whole.
Loading uses `torch.load(..., weights_only=True)`, which builds only tensors and plain
containers: a file that carries pickled code is refused with CheckpointError, never run.
"""

import dataclasses
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

FORMAT_VERSION = 2
# Format 2 (from the layout of minigen/models/ and minigen/diffusion/): a diffusion checkpoint
# carries its DiffusionConfig in extra["diffusion"], a DCGAN's image_size is (H, W), and a ViT
# block's attention is its own module (blocks.i.attn.*). `_upgrade` reads format 1 files as 2.


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) and DistributedDataParallel (`module`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, kind: str, config, model: nn.Module, step: int,
                    ema=None, optimizer=None, scheduler=None, others: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename). Returns the path.

    others: more objects with a state_dict (a GAN's discriminator and its optimizer), by name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "config_class": type(config).__name__,
        "config": dataclasses.asdict(config),
        "model": unwrap(model).state_dict(),
        "step": int(step),
        "rng": rng_state(),
        "extra": extra or {},
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if others:
        state["others"] = {name: unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
                           for name, obj in others.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Read a checkpoint onto the CPU, refusing anything but plain data.

    Raises CheckpointError (one line, saying what to do) when the file is missing, corrupt,
    carries pickled code, is not a minigen checkpoint, or is of another `kind`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(e), flags=re.IGNORECASE)
        if found:
            raise CheckpointError(f"{path}: refused, the file carries pickled code ({found.group(1)}), not only "
                                  "tensors and plain containers; it could run code, so it is not loaded") from None
        raise CheckpointError(f"{path}: not a readable checkpoint; it is corrupt or truncated") from None
    except Exception as e:  # a damaged zip or pickle stream can fail in many ways; all mean "corrupt"
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first}); it is corrupt or truncated") from None
    if not isinstance(state, dict) or "format" not in state or "kind" not in state:
        raise CheckpointError(f"{path}: not a minigen checkpoint (no format/kind fields)")
    if not isinstance(state["format"], int) or not isinstance(state["kind"], str):
        raise CheckpointError(f"{path}: not a minigen checkpoint (format {state['format']!r}, kind {state['kind']!r})")
    if state["format"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state['format']} is newer than this minigen "
                              f"understands ({FORMAT_VERSION}); update minigen")
    if kind is not None and state["kind"] != kind:
        raise CheckpointError(f"{path}: this is a {state['kind']!r} checkpoint, not a {kind!r} one")
    return _upgrade(state) if state["format"] < FORMAT_VERSION else state


def _upgrade(state: dict) -> dict:
    """A format-1 checkpoint, read as format 2 (see FORMAT_VERSION)."""
    try:
        if state["kind"] == "ddpm" and "diffusion" not in state["extra"]:
            train = state["extra"]["train"]
            state["extra"]["diffusion"] = {k: train[k] for k in ("schedule", "T", "prediction")}
        if state["kind"] == "gan" and isinstance(state["config"]["image_size"], int):
            size = state["config"]["image_size"]
            state["config"]["image_size"] = (size, size)
        if state["kind"] == "vit":
            moved = {"norm1.": "attn.norm.", "qkv.": "attn.qkv.", "proj.": "attn.proj."}
            renamed = {}
            for key, value in state["model"].items():
                parts = key.split(".", 2)                                   # blocks, i, rest
                if parts[0] == "blocks" and len(parts) == 3:
                    for old, new in moved.items():
                        if parts[2].startswith(old):
                            key = f"blocks.{parts[1]}.{new}{parts[2][len(old):]}"
                renamed[key] = value
            state["model"] = renamed
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"a format-1 {state['kind']!r} checkpoint without the expected fields ({e})") from None
    state["format"] = FORMAT_VERSION
    return state


def check_config(state: dict, config, path: str | Path = "checkpoint") -> None:
    """Refuse, in one line, to load a checkpoint into a model built from another config."""
    saved, wanted = state["config"], dataclasses.asdict(config)
    if state.get("config_class") != type(config).__name__:
        raise CheckpointError(f"{path}: holds a {state.get('config_class')} model, not a {type(config).__name__}")
    differ = [f"{k}={saved.get(k)!r} (model has {wanted.get(k)!r})"
              for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if differ:
        raise CheckpointError(f"{path}: saved with another config: " + ", ".join(differ[:4])
                              + (", ..." if len(differ) > 4 else ""))


def restore(state: dict, model: nn.Module, config, ema=None, optimizer=None, scheduler=None,
            others: dict | None = None, rng: bool = True) -> int:
    """Load a checkpoint's states into live objects (after check_config); returns its step."""
    check_config(state, config)
    unwrap(model).load_state_dict(state["model"])
    if ema is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    for name, obj in (others or {}).items():
        (unwrap(obj) if isinstance(obj, nn.Module) else obj).load_state_dict(state["others"][name])
    if rng:
        set_rng_state(state["rng"])
    return int(state["step"])
