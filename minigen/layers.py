"""Layers that several models share: time embeddings, attention, normalisation.

Papers:
    Vaswani et al. 2017, Attention Is All You Need, arXiv:1706.03762 (sinusoidal embedding,
        scaled dot-product and multi-head attention)
    Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models,
        arXiv:2112.10752, §3.3 (cross-attention: queries from the image, keys and values from
        another sequence, e.g. text tokens)
    Wu & He 2018, Group Normalization, arXiv:1803.08494

Three attention modules, one idea:
    MultiHeadAttention     over a sequence of tokens (B, N, D): self-attention when no context
                           is given (the ViT's blocks), cross-attention to a context (B, M, D_c)
                           with a padding mask otherwise (for text tokens).
    SpatialSelfAttention   over the H·W positions of a feature map (B, C, H, W), with its
                           projections as 1x1 convolutions (the U-Net's, as in Ho et al.'s code).
    SpatialCrossAttention  the H·W positions of a feature map as queries, a context's tokens (text)
                           as keys and values: MultiHeadAttention on the flattened map.
All three compute softmax(Q·Kᵀ/√d)·V per head by F.scaled_dot_product_attention.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (B,) -> (B, dim):
        emb[i]         = sin(t · ω_i),  emb[dim/2 + i] = cos(t · ω_i),  ω_i = max_period^(−i/(dim/2))
    (Vaswani et al. 2017, §3.5, with sin and cos halves concatenated as in Ho et al.'s code)."""
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * omega[None, :]                           # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)         # (B, 2·half)
    return F.pad(emb, (0, dim % 2))                                        # odd dim: one zero column


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with as many groups as asked that divide the channels (Wu & He 2018)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class MultiHeadAttention(nn.Module):
    """Multi-head attention over tokens, pre-normalised: x (B, N, D) -> (B, N, D), the residual
    branch only (the caller adds x).

    Self-attention (context_dim None): Q, K, V = LN(x)·W_qkv split in three.
    Cross-attention: Q = LN(x)·W_q, K, V = context·W_kv; `mask` (B, M) is True for the context
    tokens that may be attended to (padding is False).
        head_i = softmax(Q_i·K_iᵀ/√d)·V_i,   out = [head_1; ...; head_h]·W_o   (Vaswani et al. Eqs. 1, 4)"""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        if context_dim is None:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Q (B, heads, N, d), K and V (B, heads, M, d), with M = N for self-attention."""
        B, N, D = x.shape
        h = self.norm(x)
        if context is None:
            qkv = self.qkv(h).reshape(B, N, 3, self.heads, D // self.heads)         # (B, N, 3, heads, d)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)                             # 3 × (B, heads, N, d)
        q = self.q(h).reshape(B, N, self.heads, D // self.heads).transpose(1, 2)    # (B, heads, N, d)
        kv = self.kv(context).reshape(B, context.shape[1], 2, self.heads, D // self.heads)  # (B, M, 2, heads, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)                                  # 2 × (B, heads, M, d)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv_heads(x, context)
        attn_mask = mask[:, None, None, :] if mask is not None else None            # (B, M) -> (B, 1, 1, M)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)          # (B, heads, N, d)
        return self.proj(h.transpose(1, 2).reshape(B, N, D))                      # (B, heads, N, d) -> (B, N, D)

    @torch.no_grad()
    def weights(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(Q·Kᵀ/√d) written out, for pictures: (B, heads, N, M); masked keys get weight 0."""
        q, k, _ = self.qkv_heads(x, context)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])                 # (B, heads, N, M)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map, with a residual
    connection: x + W_o·softmax(Q·Kᵀ/√d)·V (Vaswani et al. 2017, Eq. 1). Q, K and V are 1x1
    convolutions of GroupNorm(x); the output projection starts at zero, so the block starts as
    the identity (Dhariwal & Nichol 2021)."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x))                                       # (B, 3C, H, W)
        qkv = qkv.reshape(B, 3, self.num_heads, C // self.num_heads, H * W)  # (B, 3, heads, d, HW)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)                     # 3 × (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)                        # (B, heads, HW, d)
        h = h.permute(0, 1, 3, 2).reshape(B, C, H, W)                      # (B, heads, d, HW) -> (B, C, H, W)
        return x + self.out(h)



class SpatialCrossAttention(nn.Module):
    """Cross-attention from a feature map to a context (Rombach et al. 2022, §3.3): each of the
    H·W positions is a query, LN over its channels, the context's tokens (B, M, D_c) give keys
    and values, the padding mask (B, M) hides [PAD]:
        x + W_o·softmax(Q·Kᵀ/√d)·V,   Q = LN(x)·W_q, K = context·W_k, V = context·W_v.
    The output projection starts at zero (the block starts as the identity, like the other
    residual branches)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(channels, num_heads, context_dim)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)                               # (B, C, H, W) -> (B, HW, C)
        out = self.attn(tokens, context, mask)                              # (B, HW, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)
