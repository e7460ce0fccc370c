"""A tiny Vision Transformer: image classification, and minigen's judge of generated images.

Papers:
    Dosovitskiy et al. 2020, An Image is Worth 16x16 Words, arXiv:2010.11929 (the ViT: patches as
        tokens, a learnable [CLS] token, position embeddings, Transformer encoder, head on [CLS])
    Vaswani et al. 2017, Attention Is All You Need, arXiv:1706.03762 (multi-head self-attention)
    Xiong et al. 2020, On Layer Normalization in the Transformer, arXiv:2002.04745 (pre-norm blocks)
    Beyer, Zhai & Kolesnikov 2022, Better plain ViT baselines, arXiv:2205.01580 (2-D sin-cos positions)
    Xiao et al. 2021, Early Convolutions Help Transformers See Better, arXiv:2106.14881 (the
        convolutional stem: a few stride-2 3x3 convolutions in place of the patch projection)

Shapes for the `cpu` preset on 28x28 digits: 49 patches of 4x4 pixels, each a 16-vector,
projected to 96 dimensions; with [CLS], 50 tokens go through 4 pre-norm blocks; the head reads
[CLS]. The judge's features (for Fréchet distance, precision and recall) are the final
LayerNorm's [CLS] output, the penultimate layer.

Left out: dropout paths, stochastic depth, distillation tokens, and patch sizes that do not
divide the image.
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..layers import MultiHeadAttention, timestep_embedding


@dataclass
class ViTConfig:
    image_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    patch_size: int = 4                # P: the image is cut into (H/P)·(W/P) non-overlapping P×P patches
    dim: int = 96                      # token width D
    depth: int = 4                     # Transformer blocks
    heads: int = 4
    mlp_ratio: int = 2                 # hidden width of each block's MLP = mlp_ratio · D
    num_classes: int = 10
    dropout: float = 0.0
    pos_embedding: str = "learned"     # "learned" or "sincos" (fixed 2-D sin-cos)
    stem: str = "patch"                # "patch": one linear map per P×P patch; "conv": Xiao et al.'s conv stem
    time_conditioned: bool = False     # also take a diffusion timestep t (a noise-aware classifier)


PRESETS = {
    "tiny": ViTConfig(dim=32, depth=1, heads=2, patch_size=7),
    "cpu": ViTConfig(),
    "small": ViTConfig(dim=192, depth=6, heads=6, mlp_ratio=4),
}


def preset(name: str, **overrides) -> ViTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown ViT preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D position embedding (Beyer et al. 2022): a quarter of the channels each for
    sin(y·ω), cos(y·ω), sin(x·ω), cos(x·ω), ω_i = 10000^(−i/(dim/4)). Returns (h·w, dim)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, not {dim}")
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y, x = y.flatten()[:, None] * omega[None], x.flatten()[:, None] * omega[None]   # (h·w, dim/4)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


class Block(nn.Module):
    """Pre-norm Transformer block: x + MSA(LN(x)), then x + MLP(LN(x))   (Dosovitskiy et al. Eqs. 2-3)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads)                # LN inside
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D); mask (B, N) True for real tokens (text: padding is False), None for all."""
        x = x + self.attn(x, mask=mask)
        return x + self.mlp(self.norm2(x))


def read_groups(logits: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """A head of several softmaxes (one per attribute, K_a outputs each): (B, Σ K_a) logits ->
    (B, A), the most probable value of each group. One group is ordinary classification."""
    return torch.stack([part.argmax(1) for part in logits.split(groups, dim=1)], dim=1)


class ConvStem(nn.Module):
    """Xiao et al. 2021 (§3): log2(P) convolutions 3x3, stride 2, each followed by GELU, widths
    doubling up to D/2... D, then a 1x1 convolution to D. It makes the same (H/P)·(W/P) tokens
    as the patch projection, but each token sees past its patch's border (a 3x3 kernel at every
    scale), so a shape cut by a patch boundary is still one thing; Xiao et al. find it trains
    faster and more stably. (Their BatchNorm is left out: a batch's statistics would make an
    image's embedding depend on its neighbours.)"""

    def __init__(self, channels: int, patch_size: int, dim: int):
        super().__init__()
        k = patch_size.bit_length() - 1
        if patch_size < 2 or 2**k != patch_size:
            raise ValueError(f"the conv stem halves the image log2(P) times; patch size {patch_size} is not a power of 2")
        # channels double up to D: P = 4 gives 3 -> 48 -> 96, P = 8 gives 3 -> 24 -> 48 -> 96
        widths = [channels] + [dim // 2 ** (k - i) for i in range(1, k + 1)]
        layers = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
        self.convs = nn.Sequential(*layers, nn.Conv2d(widths[-1], dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), tokens in row-major order like patchify's."""
        return self.convs(x).flatten(2).transpose(1, 2)           # (B, D, H/P, W/P) -> (B, N, D)


class ViT(nn.Module):
    """model(x) -> class logits (B, K); model.features(x) -> the [CLS] features (B, D)."""

    class_rows = ("head.weight", "head.bias")   # one row per class (fine-tuning maps them by class name)

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = self.config = config
        H, W = c.image_size
        if H % c.patch_size or W % c.patch_size:
            raise ValueError(f"patch size {c.patch_size} does not divide the image size {H}x{W}")
        self.grid = (H // c.patch_size, W // c.patch_size)
        if c.stem == "patch":
            self.patch_embed = nn.Linear(c.image_channels * c.patch_size**2, c.dim)   # E in Eq. 1
        elif c.stem == "conv":
            self.stem = ConvStem(c.image_channels, c.patch_size, c.dim)
        else:
            raise ValueError(f"stem must be 'patch' or 'conv', not {c.stem!r}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))   # x_class
        n = self.grid[0] * self.grid[1]
        if c.pos_embedding == "learned":
            self.pos = nn.Parameter(torch.randn(1, n + 1, c.dim) * 0.02)  # E_pos
        elif c.pos_embedding == "sincos":
            self.register_buffer("pos", torch.cat([torch.zeros(1, c.dim), sincos_2d(*self.grid, c.dim)])[None])
        else:
            raise ValueError(f"pos_embedding must be 'learned' or 'sincos', not {c.pos_embedding!r}")
        # For classifier guidance: the sinusoidal embedding of t, through a small MLP, added to
        # every token, so the classifier knows how noisy its input is (Dhariwal & Nichol 2021, §4).
        self.time_mlp = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim)) if c.time_conditioned else None
        self.blocks = nn.ModuleList([Block(c.dim, c.heads, c.mlp_ratio * c.dim, c.dropout) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, P·P·C), patches in row-major order."""
        B, C, H, W = x.shape
        P = self.config.patch_size
        x = x.reshape(B, C, H // P, P, W // P, P)                 # (B, C, H/P, P, W/P, P)
        x = x.permute(0, 2, 4, 3, 5, 1)                           # (B, H/P, W/P, P, P, C)
        return x.reshape(B, (H // P) * (W // P), P * P * C)       # (B, N, P·P·C)

    def tokens(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """z_0 = [x_class; x_p¹E; ...; x_pᴺE] + E_pos   (Dosovitskiy et al. Eq. 1): (B, N + 1, D),
        plus the timestep's embedding for a time-conditioned ViT (t = 0, clean, when not given)."""
        if x.shape[1:] != (self.config.image_channels, *self.config.image_size):
            raise ValueError(f"this ViT takes images of shape {(self.config.image_channels, *self.config.image_size)}, "
                             f"got {tuple(x.shape[1:])}")
        if self.config.stem == "conv":
            patches = self.stem(x)                                # (B, N, D)
        else:
            patches = self.patch_embed(self.patchify(x))          # (B, N, D)
        cls = self.cls_token.expand(len(x), -1, -1)               # (B, 1, D)
        z = torch.cat([cls, patches], dim=1) + self.pos
        if self.time_mlp is not None:
            t = torch.zeros(len(x), device=x.device) if t is None else t
            z = z + self.time_mlp(timestep_embedding(t, self.config.dim))[:, None, :]   # (B, 1, D) onto every token
        return z

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """y = LN(z_L⁰), the [CLS] token after the last block   (Eq. 4): (B, D)."""
        z = self.tokens(x, t)
        for block in self.blocks:
            z = block(z)
        return self.norm(z[:, 0])

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, t))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """How much [CLS] attends to each patch in every layer, averaged over heads, written out
        as softmax(QKᵀ/√d) (for pictures; the forward pass uses the fused kernel).
        Returns (depth, B, H/P, W/P)."""
        z, maps = self.tokens(x), []
        for block in self.blocks:
            weights = block.attn.weights(z)                                               # (B, heads, N+1, N+1)
            maps.append(weights[:, :, 0, 1:].mean(1).reshape(len(x), *self.grid))            # [CLS] row, patches only
            z = block(z)
        return torch.stack(maps)
