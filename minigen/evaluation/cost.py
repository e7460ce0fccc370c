"""What a model costs: parameters and FLOPs per forward pass."""

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, *inputs) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()
