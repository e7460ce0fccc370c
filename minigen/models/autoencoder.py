"""A convolutional variational autoencoder: images to a small latent grid and back.

Papers:
    Kingma & Welling 2014, Auto-Encoding Variational Bayes, arXiv:1312.6114 (the VAE: an
        encoder q(z|x) = N(μ, σ²), the reparameterisation z = μ + σ·ε, the KL term in closed form)
    Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models,
        arXiv:2112.10752, §3 and App. G (this shape: a KL-regularised autoencoder with a
        downsampling factor f and c latent channels, ResBlocks and GroupNorm, a small KL weight)

Layout for the `f4` preset on 28x28 images (channels in brackets):
    x (1, 28, 28) -> conv [32] -> ResBlock [32] -> Downsample -> ResBlock [64] -> Downsample
                  -> ResBlock [64] -> middle ResBlock at 7x7 -> GN, SiLU, conv -> μ, log σ² (4, 7, 7) each
    z (4, 7, 7)   -> conv [64] -> middle ResBlock -> ResBlock [64] -> Upsample -> ResBlock [64]
                  -> Upsample -> ResBlock [32] -> GN, SiLU, conv -> x̂ (1, 28, 28)
The ResBlocks, Downsample and Upsample are the U-Net's, without a time embedding.
Left out: attention in the middle (Rombach et al. have one at the lowest resolution), the
adversarial and perceptual loss terms (no pretrained perceptual network can be downloaded here).
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import group_norm
from .unet import Downsample, ResBlock, Upsample


@dataclass
class AutoencoderConfig:
    image_channels: int = 1
    image_size: tuple[int, int] = (28, 28)     # each divisible by the factor f
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one level per entry; f = 2^(levels − 1)
    latent_channels: int = 4                    # c
    groups: int = 8

    @property
    def factor(self) -> int:
        """f: the latent grid is (H/f, W/f)."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.image_size[0] // self.factor, self.image_size[1] // self.factor)


PRESETS = {
    "tiny": AutoencoderConfig(base_channels=8, channel_mults=(1, 2), latent_channels=2, groups=4),   # tests
    "f2": AutoencoderConfig(channel_mults=(1, 2)),                                                # 32 px, small details
    "f4": AutoencoderConfig(),                                                                    # 28-32 px
    "f8": AutoencoderConfig(image_channels=3, image_size=(64, 64), base_channels=16, channel_mults=(1, 2, 2, 4)),
}


def preset(name: str, **overrides) -> AutoencoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown autoencoder preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent element, in closed form (Kingma & Welling App. B):
        KL = ½·(μ² + σ² − 1 − log σ²)"""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def levels(chans: list[int], groups: int, resample) -> nn.Sequential:
    """A ResBlock per level (from the previous level's channels to this one's), with
    `resample` (Downsample or Upsample) between levels."""
    layers = []
    for level, out in enumerate(chans):
        layers.append(ResBlock(chans[max(level - 1, 0)], out, 0, 0.0, groups))
        if level < len(chans) - 1:
            layers.append(resample(out))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        chans = [c.base_channels * m for m in c.channel_mults]
        self.conv_in = nn.Conv2d(c.image_channels, chans[0], 3, padding=1)
        self.down = levels(chans, c.groups, Downsample)
        ch = chans[-1]
        self.mid = ResBlock(ch, ch, 0, 0.0, c.groups)
        self.norm_out = group_norm(ch, c.groups)
        self.conv_out = nn.Conv2d(ch, 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mid(self.down(self.conv_in(x)))                           # (B, ch, H/f, W/f)
        mu, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)                               # (B, c, H/f, W/f) each


class Decoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        chans = [c.base_channels * m for m in c.channel_mults][::-1]     # deepest first
        self.conv_in = nn.Conv2d(c.latent_channels, chans[0], 3, padding=1)
        self.mid = ResBlock(chans[0], chans[0], 0, 0.0, c.groups)
        self.up = levels(chans, c.groups, Upsample)
        ch = chans[-1]
        self.norm_out = group_norm(ch, c.groups)
        self.conv_out = nn.Conv2d(ch, c.image_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))                             # (B, base, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))                     # (B, C, H, W)


class Autoencoder(nn.Module):
    """encode(x) -> (μ, log σ²); sample(μ, log σ²) -> z; decode(z) -> x̂; model(x) -> x̂, μ, log σ²."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        f = config.factor
        if config.image_size[0] % f or config.image_size[1] % f:
            raise ValueError(f"image size {config.image_size} is not divisible by the factor f = {f}")
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reparameterisation z = μ + σ·ε, ε ~ N(0, I) (Kingma & Welling §2.4): z is a
        differentiable function of μ and σ, so the gradient reaches the encoder."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar)), mu, logvar


def vae_loss(model: Autoencoder, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L = ‖x − x̂‖₁ + β·KL(q(z|x) ‖ N(0, I)), both as means (per pixel, per latent element).
    L1 rather than L2: Rombach et al.'s choice; L2's gradient vanishes on small errors, which
    leaves reconstructions blurrier. β small (e.g. 1e-3 here) keeps the latents informative for
    diffusion, a larger β makes z ~ N(0, I) decode to better prior samples (the VAE as generator).
    Returns (loss, reconstruction term, KL term)."""
    x_hat, mu, logvar = model(x)
    rec = (x_hat - x).abs().mean()
    kl = kl_to_standard_normal(mu, logvar).mean()
    return rec + beta * kl, rec, kl
