"""Fine-tuning: start a new run from another run's weights (`--init-from CKPT`).

The new run has its own optimizer, learning rate, warm-up and step count; only the networks'
weights come from the checkpoint (the EMA weights where it has them: those are the ones that
sample well). The class set may differ from the checkpoint's: each network names the parameters
whose rows are one per class (`class_rows`); a class the two runs share keeps its row, a new
class keeps the fresh row it was initialised with, a class the new data lacks is dropped, and
rows after the classes (the U-Net's null label) are kept. Everything else must match in shape:
the same preset, image channels and size (compared by the configs: a convolutional network's
weights would load at any size, and be wrong there).
"""

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import load_checkpoint


def init_from(path, kind: str, networks: dict[str, nn.Module], classes: list[str], config=None) -> tuple[dict, str]:
    """Load `networks` ({"model": ..., and a GAN's "discriminator"}) from checkpoint `path`, mapping
    class rows by class name. Returns what the new checkpoint records of it, and a sentence saying
    what was done."""
    state = load_checkpoint(path, kind=kind)
    old = list(state["extra"].get("classes", [])) if state["config"].get("num_classes") else []
    if config is not None:
        saved_shape = (state["config"].get("image_channels"), tuple(state["config"].get("image_size", ())))
        shape = (config.image_channels, tuple(config.image_size))
        if saved_shape != shape:
            raise CheckpointError(f"--init-from {path}: made for {saved_shape[0]}x{'x'.join(map(str, saved_shape[1]))} "
                                  f"images, this run's are {shape[0]}x{'x'.join(map(str, shape[1]))}; image channels, "
                                  "size and --preset must match")
    saved = {"model": state["ema"]["model"] if "ema" in state else state["model"], **state.get("others", {})}
    for name, network in networks.items():
        if name not in saved:
            raise CheckpointError(f"--init-from {path}: has no {name} weights")
        network.load_state_dict(_mapped(network, saved[name], old, classes, path))
    kept = [c for c in classes if c in old]
    said = (f"started from {path} (step {state['step']}, {'EMA' if 'ema' in state else 'raw'} weights)"
            + (f"; classes kept {len(kept)}, new {len(classes) - len(kept)} (fresh rows), "
               f"dropped {len(old) - len(kept)}" if old != classes and (old or classes) else ""))
    return {"path": str(path), "step": int(state["step"]), "classes": old}, said


def _mapped(network: nn.Module, saved: dict, old: list[str], new: list[str], path) -> dict:
    target = network.state_dict()
    rows = set(getattr(network, "class_rows", ()))
    if bool(old) != bool(new) and any(key in target or key in saved for key in rows):
        raise CheckpointError(f"--init-from {path}: one model is class-conditional and the other is not")
    out = {}
    for key, fresh in target.items():
        if key not in saved:
            raise CheckpointError(f"--init-from {path}: its network has no {key}; use the same --preset")
        weights = saved[key]
        if key in rows:
            extra = weights.shape[0] - len(old)                  # rows after the classes (a null label)
            if extra != fresh.shape[0] - len(new) or weights.shape[1:] != fresh.shape[1:]:
                raise CheckpointError(f"--init-from {path}: {key} is {tuple(weights.shape)}, not made for "
                                      f"{len(old)} classes like this one's {tuple(fresh.shape)}")
            mapped = fresh.clone()
            for i, name in enumerate(new):
                if name in old:
                    mapped[i] = weights[old.index(name)]
            mapped[len(new):] = weights[len(old):]
            out[key] = mapped
        elif weights.shape != fresh.shape:
            raise CheckpointError(f"--init-from {path}: {key} is {tuple(weights.shape)} there and "
                                  f"{tuple(fresh.shape)} here; image channels, size and --preset must match")
        else:
            out[key] = weights
    return out


def restart_ema(ema, model: nn.Module) -> None:
    """The EMA of a fine-tuning run starts from the loaded weights, with its decay warming up
    again from 0, so it follows the new training (not the random initialisation)."""
    with torch.no_grad():
        ema.model.load_state_dict(model.state_dict())
    ema.step = 0
