"""DCGAN: a convolutional generator and discriminator trained against each other.

Papers:
    Goodfellow et al. 2014, Generative Adversarial Networks, arXiv:1406.2661 (the minimax game
        and the non-saturating generator loss)
    Radford, Metz & Chintala 2015, DCGAN, arXiv:1511.06434 (the architecture rules below)
    Mirza & Osindero 2014, Conditional GANs, arXiv:1411.1784 (labels into G)
    Miyato & Koyama 2018, cGANs with Projection Discriminator, arXiv:1802.05637 (labels into D)

Radford et al.'s rules, all followed here:
    * no pooling: strided convolutions (D) and transposed convolutions (G) change resolution;
    * BatchNorm in both networks, except G's output layer and D's input layer;
    * ReLU in G with Tanh at the output; LeakyReLU(0.2) in D;
    * weights initialised from N(0, 0.02); BatchNorm γ from N(1, 0.02), β = 0.

Sizes: G starts from a 7x7 map for 28-pixel images and a 4x4 map otherwise, doubling until
the image size (28, 32, 64, 128; square), halving channels each time; D mirrors it.

Left out: spectral normalisation, self-attention (SAGAN), and hinge or Wasserstein losses.
"""

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

SIZES = (28, 32, 64, 128)


@dataclass
class DCGANConfig:
    image_channels: int = 1      # 1 (grayscale) or 3 (RGB)
    image_size: tuple[int, int] = (28, 28)   # (H, W), square, each one of SIZES
    z_dim: int = 100             # latent size: z ~ N(0, I)
    g_channels: int = 64         # G's channels at its last hidden layer (Radford et al.'s ngf)
    d_channels: int = 64         # D's channels at its first layer (ndf)
    num_classes: int = 0         # 0: unconditional


PRESETS = {
    "tiny": DCGANConfig(z_dim=16, g_channels=8, d_channels=8),
    "cpu": DCGANConfig(g_channels=64, d_channels=64),
    "dcgan": DCGANConfig(image_channels=3, image_size=(64, 64)),     # Radford et al.'s 64x64 network
}


def preset(name: str, **overrides) -> DCGANConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DCGAN preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _plan(image_size: tuple[int, int]) -> tuple[int, int]:
    """(side of the first feature map, number of ×2 steps) for a square image size."""
    H, W = image_size
    if H != W or H not in SIZES:
        raise ValueError(f"the DCGAN makes square images of {SIZES} pixels, not {H}x{W}")
    size = H
    start = 7 if size == 28 else 4
    return start, int(math.log2(size // start))


def init_weights(module: nn.Module) -> None:
    """Radford et al. §4: every weight from N(0, 0.02); BatchNorm scale γ from N(1, 0.02), shift β = 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """G(z, y) -> image in [−1, 1]: z (B, z_dim) [+ label embedding] -> (B, C, size, size)."""

    class_rows = ("label_emb.weight",)      # one row per class (fine-tuning maps them by class name)

    def __init__(self, config: DCGANConfig):
        super().__init__()
        c = self.config = config
        start, ups = _plan(c.image_size)
        self.label_emb = nn.Embedding(c.num_classes, c.z_dim) if c.num_classes else None
        in_dim = 2 * c.z_dim if c.num_classes else c.z_dim
        ch = c.g_channels * 2 ** (ups - 1)
        layers = [nn.ConvTranspose2d(in_dim, ch, start, 1, 0, bias=False),    # (B, z, 1, 1) -> (B, ch, s, s)
                  nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),   # doubles H and W
                       nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, c.image_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this generator is class-conditional: pass labels y")
            z = torch.cat([z, self.label_emb(y)], dim=1)                       # (B, 2·z_dim)
        return self.net(z[:, :, None, None])                                   # (B, z) -> (B, z, 1, 1)


class Discriminator(nn.Module):
    """D(x, y) -> one logit per image (real > 0 > fake). With labels, the projection term
    ⟨embed(y), φ(x)⟩ is added to the logit (Miyato & Koyama 2018, Eq. 3), φ(x) being the
    features before the last layer, summed over positions."""

    class_rows = ("label_emb.weight",)

    def __init__(self, config: DCGANConfig):
        super().__init__()
        c = self.config = config
        start, downs = _plan(c.image_size)
        ch = c.d_channels
        layers = [nn.Conv2d(c.image_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]   # no BatchNorm here
        for _ in range(downs - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.features = nn.Sequential(*layers)                                  # (B, ch, s, s)
        self.logit = nn.Conv2d(ch, 1, start, 1, 0)                              # (B, ch, s, s) -> (B, 1, 1, 1)
        self.label_emb = nn.Embedding(c.num_classes, ch) if c.num_classes else None
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.logit(h).flatten()                                           # (B,)
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y")
            out = out + (self.label_emb(y) * h.sum(dim=(2, 3))).sum(dim=1)      # ⟨embed(y), Σ_positions φ(x)⟩
        return out


def discriminator_targets(batch: int, real_label: float, flip_prob: float, device=None,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """D's BCE targets for a batch of real and a batch of fake images.

    One-sided label smoothing (Salimans et al. 2016, §3.4): real images get `real_label` (e.g. 0.9)
    instead of 1; fakes keep 0. Label flipping: each image's pair of targets is swapped with
    probability `flip_prob`, so a few reals are called fake and a few fakes real."""
    target_real = torch.full((batch,), real_label, device=device)
    target_fake = torch.zeros(batch, device=device)
    swap = torch.rand(batch, device=device, generator=generator) < flip_prob
    return torch.where(swap, target_fake, target_real), torch.where(swap, target_real, target_fake)
