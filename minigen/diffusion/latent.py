"""Latent diffusion: the reverse process runs on a small grid of latents, the decoder draws pixels once.

Paper:
    Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models,
        arXiv:2112.10752, §3 (diffusion on z = E(x) of a frozen autoencoder) and §4.3.2 / App. G
        (the KL autoencoder's latents are rescaled by one scalar s, so that z·s has unit variance)

    training:  z_0 = s·z,  z ~ q(z | x) = N(μ(x), σ²(x))        (a fresh draw each step)
               the U-Net learns to denoise z_t exactly as it would x_t
    sampling:  z_T ~ N(0, I)  ->  any sampler  ->  z_0  ->  x = D(z_0 / s)

Why s: the forward process q(z_t | z_0) = N(√ᾱ_t·z_0, (1 − ᾱ_t)·I) assumes the data has about unit
scale (the schedules were tuned on pixels in [−1, 1]); a KL autoencoder with a small β is free
to put its latents at any scale, and at a large one the noise would not reach them until late
in the chain (at a small one, too early). One scalar from the data fixes that.

`LatentSpace` is the frozen autoencoder and s. A pipeline with one maps between the two spaces
(`to_latent`, `to_pixels`); everything in between (samplers, guidance, editing) never knows.
"""

import dataclasses
import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..models.autoencoder import Autoencoder, AutoencoderConfig


def fingerprint(weights: dict) -> str:
    """SHA-256 of a state dict's names and tensor bytes, in name order: the same weights give the
    same fingerprint on any machine, one changed value gives another."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def scale_fingerprint(sha256: str, scale: float) -> str:
    """SHA-256 of the autoencoder's fingerprint and s (as its exact decimal form): the scale is
    part of what the diffusion model learned, so a changed one is refused like changed weights.
    (Checkpoints written before it have no such field; their scale is checked for range only.)"""
    return hashlib.sha256(f"{sha256}:{float(scale)!r}".encode()).hexdigest()


class LatentSpace(nn.Module):
    """A frozen autoencoder and the scale s of its latents."""

    def __init__(self, autoencoder: Autoencoder, scale: float, source: str = ""):
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale = float(scale)
        self.source = source                            # the train_vae.py checkpoint it came from (a note)

    @property
    def factor(self) -> int:
        return self.autoencoder.config.factor

    @classmethod
    @torch.no_grad()
    def fit(cls, autoencoder: Autoencoder, x: torch.Tensor, generator: torch.Generator | None = None,
            source: str = "") -> "LatentSpace":
        """s = 1 / std(z) over latents z ~ q(z|x) of a batch of images (Rombach et al. §4.3.2:
        'we rescale the latents by the component-wise standard deviation'; one scalar, from data)."""
        mu, logvar = autoencoder.eval().encode(x)
        z = Autoencoder.sample(mu, logvar, generator)
        return cls(autoencoder, 1.0 / z.float().std().item(), source)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """x (B, C, H, W) in [−1, 1] -> s·z (B, c, H/f, W/f); z drawn from q(z|x), or its mean
        μ(x) when `sample` is False (editing an image: the most likely latent)."""
        mu, logvar = self.moments(x)
        return self.draw(mu, logvar, generator) if sample else self.scale * mu

    @torch.no_grad()
    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s parameters: μ(x) and log σ²(x), each (B, c, H/f, W/f). The autoencoder is
        frozen, so a training set's moments can be computed once and drawn from at every step."""
        return self.autoencoder.encode(x)

    def draw(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """s·z with z = μ + σ·ε, ε ~ N(0, I): a fresh latent of the same image (B, c, h, w)."""
        return self.scale * Autoencoder.sample(mu, logvar, generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """s·z (B, c, h, w) -> x̂ = D(z) (B, C, H, W), clipped to [−1, 1]."""
        return self.autoencoder.decode(z / self.scale).clamp(-1, 1)

    def pixel_loss(self, loss_fn):
        """A loss on pixels as a loss on latents: loss(D(z / s)), differentiable through the
        frozen decoder, so that loss guidance (a colour, a CLIP prompt) steers a latent model."""
        return lambda z: loss_fn(self.autoencoder.decode(z / self.scale))

    def mask(self, keep: torch.Tensor) -> torch.Tensor:
        """A pixel mask (B, 1, H, W), 1 = known, on the latent grid (B, 1, H/f, W/f): a latent
        cell is known only when every pixel of its f×f patch is (a min-pool), so a regenerated
        pixel never sits under a cell that inpainting pins to the original."""
        return -F.max_pool2d(-keep.float(), self.factor)

    # ---- inside a diffusion checkpoint --------------------------------------------------------

    def state(self) -> dict:
        """What a latent diffusion checkpoint embeds: the autoencoder itself (so sampling needs no
        second file), its fingerprint, s, and where it came from."""
        weights = {k: v.detach().cpu() for k, v in self.autoencoder.state_dict().items()}
        sha256 = fingerprint(weights)
        return {"config": dataclasses.asdict(self.autoencoder.config), "weights": weights, "sha256": sha256,
                "scale": self.scale, "scale_sha256": scale_fingerprint(sha256, self.scale), "source": self.source}

    @classmethod
    def from_state(cls, state: dict, where: str = "checkpoint") -> "LatentSpace":
        """The latent space embedded in a checkpoint; an autoencoder whose weights no longer match
        the fingerprint recorded when the diffusion model was trained is refused (one line)."""
        if fingerprint(state["weights"]) != state["sha256"]:
            raise CheckpointError(f"{where}: its embedded autoencoder (from {state['source'] or 'unknown'}) was altered "
                                  "after the diffusion model was trained on it (SHA-256 differs); retrain or restore it")
        scale = state["scale"]
        altered = "scale_sha256" in state and scale_fingerprint(state["sha256"], scale) != state["scale_sha256"]
        if altered or not (isinstance(scale, float) and math.isfinite(scale) and scale > 0):
            raise CheckpointError(f"{where}: the scale s = {scale!r} of its latents is not the one the diffusion model "
                                  "was trained with (altered, or not a positive number); retrain or restore it")
        autoencoder = Autoencoder(AutoencoderConfig(**state["config"]))
        autoencoder.load_state_dict(state["weights"])
        return cls(autoencoder, state["scale"], state["source"])
