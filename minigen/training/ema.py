"""Exponential moving average (EMA) of a model's weights, with warm-up of the decay.

    θ_ema ← β·θ_ema + (1 − β)·θ                       (Polyak & Juditsky 1992)
    β_k = 1 − (1 + k / inv_gamma)^(−power), clamped to [min_decay, max_decay]

The warm-up (the form used by Karras et al.'s and diffusers' EMA) makes early averages
follow the weights closely, when the initial weights are noise, and approach
`max_decay` as training goes on. With inv_gamma = 1, power = 2/3 the decay reaches 0.999
at about 31k steps; power = 3/4 suits short runs. Samples are drawn from the EMA weights:
Ho et al. 2020 (§B) and most diffusion codebases do, and the samples are visibly smoother.

Buffers (BatchNorm running statistics, for instance) are copied, not averaged: they are
already averages, and averaging a step counter is meaningless.
"""

import copy

import torch
from torch import nn


class EMA:
    """Keeps `self.model`, an averaged copy of a model. Call `update(model)` after each optimizer step."""

    def __init__(self, model: nn.Module, max_decay: float = 0.9999, min_decay: float = 0.0,
                 inv_gamma: float = 1.0, power: float = 2 / 3):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.min_decay = max_decay, min_decay
        self.inv_gamma, self.power = inv_gamma, power
        self.step = 0

    def decay(self, step: int) -> float:
        """β_k = 1 − (1 + k/inv_gamma)^(−power), clamped."""
        value = 1 - (1 + step / self.inv_gamma) ** -self.power
        return min(self.max_decay, max(self.min_decay, value))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.decay(self.step)
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1 - beta)                   # θ_ema ← β·θ_ema + (1 − β)·θ
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.step += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
