"""The denoising U-Net: predicts ε (or x_0, or v) from a noisy image x_t and its timestep t.

Papers:
    Ronneberger et al. 2015, U-Net, arXiv:1505.04597 (the encoder-decoder with skip connections)
    Ho, Jain & Abbeel 2020, DDPM, arXiv:2006.11239, App. B (this network's layout: Wide-ResNet
        blocks, GroupNorm, self-attention at 16x16, sinusoidal time embedding)
    Vaswani et al. 2017, Attention Is All You Need, arXiv:1706.03762 (sinusoidal embedding, attention)
    Dhariwal & Nichol 2021, Diffusion Models Beat GANs, arXiv:2105.05233 (scale-and-shift
        conditioning of the normalised features, "AdaGN"; zero-initialised last convolutions)
    Ho & Salimans 2022, Classifier-Free Guidance, arXiv:2207.12598 (the extra "null" label)
    Rombach et al. 2022, Latent Diffusion Models, arXiv:2112.10752, §3.3 (cross-attention to text
        tokens wherever there is self-attention; models/text_to_image.py supplies the tokens)
    Meng et al. 2023, On Distillation of Guided Diffusion Models, arXiv:2210.03142, §4.1 (the
        guidance scale w as an input, embedded like the timestep: one pass gives the guided output)

Layout for the `cpu` preset on 28x28 digits (channels in brackets):
    x_t (1, 28, 28) -> conv [32] -> level 0: ResBlock [32] at 28x28        -> Downsample
                                 -> level 1: ResBlock [64] at 14x14        -> Downsample
                                 -> level 2: ResBlock [64] + attention at 7x7
                    -> middle: ResBlock, attention, ResBlock at 7x7
                    -> the same levels back up, each block eating one skip (concatenated),
                       Upsample between levels -> GroupNorm, SiLU, conv -> output (1, 28, 28)
The timestep (and the class label, when the model is conditional) becomes one embedding
vector that every ResBlock turns into a per-channel scale and shift. With `context_dim` > 0,
every attention site (and the middle) also cross-attends to a sequence of context tokens. With
`guidance_embedding`, the guidance scale w is embedded like t and added too (distill.py's
guidance-distilled students; its last layer starts at zero, so a student begins as its teacher).

Left out: BigGAN-style up/down-sampling residual blocks, learned variance output,
and attention heads sized by channels per head rather than a head count.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import SpatialCrossAttention, SpatialSelfAttention, group_norm, timestep_embedding


@dataclass
class UNetConfig:
    image_channels: int = 1                 # 1 (grayscale) or 3 (RGB)
    image_size: tuple[int, int] = (28, 28)  # (H, W); each must be divisible by 2^(levels − 1)
    base_channels: int = 32                 # channels at the first level
    channel_mults: tuple[int, ...] = (1, 2, 2)   # channels per level = base × mult; one level per entry
    num_res_blocks: int = 1                 # ResBlocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sizes (min of H, W) that get self-attention
    num_heads: int = 4
    dropout: float = 0.1
    num_classes: int = 0                    # 0: unconditional; else labels 0..K−1 and K = "null"
    groups: int = 8                         # GroupNorm groups (Wu & He 2018); 32 in Ho et al.
    context_dim: int = 0                    # width of context tokens (text) to cross-attend to; 0: none
    guidance_embedding: bool = False        # takes the guidance scale w as an input (a guidance-distilled student)


PRESETS = {
    # For tests: a forward pass in milliseconds.
    "tiny": UNetConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(14,),
                       num_heads=2, dropout=0.0, groups=4),
    # The default of train_ddpm.py on a CPU: class-conditional digits in about 15 minutes.
    "cpu": UNetConfig(),
    # A CIFAR-10-sized network for a GPU: 38.3M parameters with 10 classes (Ho et al.'s CIFAR model: 35.7M).
    "cifar": UNetConfig(image_channels=3, image_size=(32, 32), base_channels=128, channel_mults=(1, 2, 2, 2),
                        num_res_blocks=2, attention_resolutions=(16,), num_heads=4, dropout=0.1, groups=32),
}


def preset(name: str, **overrides) -> UNetConfig:
    """A named preset with some fields replaced (e.g. the data's channels, size and classes)."""
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def fit_grid(config: UNetConfig, size: tuple[int, int]) -> UNetConfig:
    """The same network for a smaller grid (a latent one: 8x8, 7x7): as many of its levels as
    the grid halves into evenly (each level halves it), and self-attention at the same depths
    as before (the deepest kept level for a depth that is gone)."""
    H, W = size
    levels = max(L for L in range(1, len(config.channel_mults) + 1) if H % 2 ** (L - 1) == 0 and W % 2 ** (L - 1) == 0)
    native = min(config.image_size)
    depths = {i for i in range(len(config.channel_mults)) if native // 2**i in config.attention_resolutions}
    attention = tuple(sorted({min(H, W) // 2 ** min(i, levels - 1) for i in depths}, reverse=True))
    return replace(config, image_size=(H, W), channel_mults=config.channel_mults[:levels], attention_resolutions=attention)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, then the embedding as scale and shift of the normalised
    features, h ← GN(h)·(1 + scale) + shift (Dhariwal & Nichol 2021, §3 "AdaGN"), -> SiLU ->
    dropout -> conv3x3 (zero-initialised, so each block starts as the identity), plus the input.
    With emb_dim = 0 there is no embedding (the autoencoder's blocks): h ← GN(h)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch) if emb_dim else None
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                              # (B, out, H, W)
        h = self.norm2(h)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution (Ho et al.)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 convolution (Ho et al.)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class NoCrossAttention(nn.Module):
    """Where there is no cross-attention: the features pass unchanged (no parameters)."""

    def forward(self, x, context=None, mask=None):
        return x


class Level(nn.Module):
    """The blocks of one resolution: ResBlocks, each followed by attention where configured
    (self-attention, then cross-attention to the context for a text-conditional model)."""

    def __init__(self, blocks: list[ResBlock], attentions: list[nn.Module], crosses: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.crosses = nn.ModuleList(crosses)


class UNet(nn.Module):
    """model(x_t, t, y=None) -> output of x_t's shape. y: class labels (B,), K = the null label."""

    class_rows = ("label_emb.weight",)      # one row per class, then the null label's (fine-tuning maps them)

    def __init__(self, config: UNetConfig):
        super().__init__()
        c = self.config = config
        H, W = c.image_size
        levels = len(c.channel_mults)
        factor = 2 ** (levels - 1)
        if H % factor or W % factor:
            raise ValueError(f"image size {H}x{W} is not divisible by 2^{levels - 1} = {factor} "
                             f"({levels} levels); use a size divisible by {factor} or fewer channel_mults")
        emb_dim = 4 * c.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(c.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One row per class plus the "null" label K used for classifier-free guidance.
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes > 0 else None
        self.guidance_mlp = None
        if c.guidance_embedding:                                   # w -> sinusoid -> MLP, as t; zero at first
            self.guidance_mlp = nn.Sequential(nn.Linear(c.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            nn.init.zeros_(self.guidance_mlp[-1].weight)
            nn.init.zeros_(self.guidance_mlp[-1].bias)
        self.stem = nn.Conv2d(c.image_channels, c.base_channels, 3, padding=1)

        def attention(ch: int, size: int) -> nn.Module:
            return SpatialSelfAttention(ch, c.num_heads, c.groups) if size in c.attention_resolutions else nn.Identity()

        def cross(ch: int, size: int | None) -> nn.Module:         # size None: the middle, always
            wanted = c.context_dim and (size is None or size in c.attention_resolutions)
            return SpatialCrossAttention(ch, c.context_dim, c.num_heads) if wanted else NoCrossAttention()

        # ---- encoder: remember every feature map's channels for its skip connection ----
        skips, ch, size = [c.base_channels], c.base_channels, min(H, W)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in enumerate(c.channel_mults):
            blocks, attns, crosses = [], [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(ch, mult * c.base_channels, emb_dim, c.dropout, c.groups))
                ch = mult * c.base_channels
                attns.append(attention(ch, size))
                crosses.append(cross(ch, size))
                skips.append(ch)
            self.down.append(Level(blocks, attns, crosses))
            if i < levels - 1:
                self.downsample.append(Downsample(ch))
                skips.append(ch)
                size //= 2
        # ---- middle ----
        self.mid1 = ResBlock(ch, ch, emb_dim, c.dropout, c.groups)
        self.mid_attn = SpatialSelfAttention(ch, c.num_heads, c.groups)
        self.mid_cross = cross(ch, None)
        self.mid2 = ResBlock(ch, ch, emb_dim, c.dropout, c.groups)
        # ---- decoder: one more block per level than the encoder, each eating one skip ----
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(c.channel_mults))):
            blocks, attns, crosses = [], [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), mult * c.base_channels, emb_dim, c.dropout, c.groups))
                ch = mult * c.base_channels
                attns.append(attention(ch, size))
                crosses.append(cross(ch, size))
            self.up.append(Level(blocks, attns, crosses))
            if i > 0:
                self.upsample.append(Upsample(ch))
                size *= 2
        self.head = nn.Sequential(group_norm(ch, c.groups), nn.SiLU(), nn.Conv2d(ch, c.image_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                extra_emb: torch.Tensor | None = None, w: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,); y (B,) class labels; context (B, M, context_dim) tokens with
        context_mask (B, M), True for real tokens (a text-conditional model); extra_emb (B, 4·base)
        added to the time embedding (a pooled text vector); w (B,) the guidance scale, for a
        guidance-distilled network (required by one, refused by any other)."""
        c = self.config
        if c.context_dim and context is None:
            raise ValueError("this U-Net cross-attends to context tokens; give context (and context_mask)")
        if x.shape[1:] != (c.image_channels, *c.image_size):
            raise ValueError(f"this U-Net takes images of shape {(c.image_channels, *c.image_size)}, "
                             f"got {tuple(x.shape[1:])}")
        emb = self.time_mlp(timestep_embedding(t, c.base_channels))        # (B, 4·base)
        if self.label_emb is not None:
            if y is None:                                                  # no label given: the null label
                y = torch.full((x.shape[0],), c.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        if extra_emb is not None:
            emb = emb + extra_emb
        if (w is None) != (self.guidance_mlp is None):
            raise ValueError("a guidance-distilled U-Net takes the guidance scale w" if w is None
                             else "this U-Net was not trained with the guidance scale as an input; give no w")
        if w is not None:                      # w ~ 1-10 spread over the sinusoid's range as t's 0-999 are
            emb = emb + self.guidance_mlp(timestep_embedding(100 * w, c.base_channels))
        h = self.stem(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn, cross in zip(level.blocks, level.attentions, level.crosses):
                h = cross(attn(block(h, emb)), context, context_mask)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_cross(self.mid_attn(self.mid1(h, emb)), context, context_mask), emb)
        for i, level in enumerate(self.up):
            for block, attn, cross in zip(level.blocks, level.attentions, level.crosses):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))      # (B, ch + skip, H, W)
                h = cross(h, context, context_mask)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.head(h)

    # ---- the model's own conditioning: what "no condition" means, for classifier-free guidance ----

    def null_condition(self, y: torch.Tensor) -> dict:
        """The condition of the unconditional model: the null label K for every image."""
        return {"y": torch.full_like(y, self.config.num_classes)}

    def drop_condition(self, p: float, y: torch.Tensor) -> dict:
        """Label dropout (Ho & Salimans 2022, Algorithm 1): with probability p an image's label
        becomes the null label, so one network also learns the unconditional model."""
        drop = torch.rand(len(y), device=y.device) < p
        return {"y": torch.where(drop, torch.full_like(y, self.config.num_classes), y)}

