"""A tiny Transformer text encoder: token ids -> per-token features and a pooled vector.

Papers:
    Vaswani et al. 2017, Attention Is All You Need, arXiv:1706.03762 (the Transformer encoder)
    Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision
        (CLIP), arXiv:2103.00020, §2.4 (a text Transformer whose one token's final state, layer-
        normalised, is the text's feature; CLIP takes [EOS], minigen a leading [CLS] as the ViT)

    ids (B, L), mask (B, L)  ->  token embedding + learned position embedding   (B, L, D)
                             ->  depth × the ViT's pre-norm Block, padding masked out of attention
                             ->  LayerNorm  ->  tokens (B, L, D) for cross-attention, pooled = tokens[:, 0]

The blocks are `vit.Block`: the same pre-norm attention and MLP as the image tower, with the
padding mask passed to attention (a padded position is never attended to).
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from .vit import Block


@dataclass
class TextEncoderConfig:
    vocab_size: int = 64
    max_len: int = 24                  # L: tokens per caption, [CLS] included
    dim: int = 96                      # D
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2


PRESETS = {
    "tiny": TextEncoderConfig(dim=32, depth=1, heads=2),     # tests
    "cpu": TextEncoderConfig(),
}


def preset(name: str, **overrides) -> TextEncoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown text encoder preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class TextEncoder(nn.Module):
    """model(ids, mask) -> (tokens (B, L, D), pooled (B, D))."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        c = self.config = config
        self.token_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos = nn.Parameter(torch.randn(1, c.max_len, c.dim) * 0.02)
        self.blocks = nn.ModuleList([Block(c.dim, c.heads, c.mlp_ratio * c.dim, 0.0) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.token_emb(ids) + self.pos[:, : ids.shape[1]]             # (B, L, D)
        for block in self.blocks:
            z = block(z, mask)
        tokens = self.norm(z)
        return tokens, tokens[:, 0]                                        # [CLS] is the pooled vector
