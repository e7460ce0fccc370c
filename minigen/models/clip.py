"""A tiny CLIP: an image tower and a text tower trained to agree (Radford et al. 2021).

Paper:
    Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision,
        arXiv:2103.00020, §2.3 and Figure 3 (the symmetric contrastive loss, written out below;
        a learned temperature τ, kept as log(1/τ), initialised at 1/0.07 and capped at 100)

    image tower: the ViT (vit.py); its head is the projection W_i to the joint space, E dims
    text tower:  the text encoder (text.py); its pooled vector through W_t, E dims
    I = normalise(W_i·f(x)), T = normalise(W_t·g(caption))         (B, E) each, unit length
    logits = exp(log 1/τ) · I·Tᵀ                                    (B, B): image i against caption j
    loss = ½·[CE(logits, diag) + CE(logitsᵀ, diag)]                  image->text and text->image

A matching pair sits on the diagonal; every other caption of the batch is a negative.
Hard negatives (Yuksekgonul et al. 2023, NegCLIP, arXiv:2210.01936): a batch rarely holds two
captions that differ in one word only, so nothing forces the towers to bind every word (CLIPs
behave like bags of words); captions with one attribute changed ("a small red *square* ...")
join each image's negatives in the image->text term:
    loss = ½·[CE([I·Tᵀ, I·T_hardᵀ]·exp(log 1/τ), diag) + CE(logitsᵀ, diag)]
Twins: a batch may hold two images whose captions describe the same facts (in a batch of 128
of captioned-shapes' 720 combinations, drawn in groups of four, some do most of the time; in
a labelled set's batch most images have one). Counted as negatives, each is taught to be unlike
its own description; with `twins` those pairs leave both cross-entropies:
    logits_ij ← −∞ for i ≠ j with the same facts
Left out: CLIP's [EOS] pooling (a leading [CLS] here, as the ViT).
"""

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import text as text_models
from . import vit as vit_models
from .text import TextEncoder, TextEncoderConfig
from .vit import ViT, ViTConfig


@dataclass
class CLIPConfig:
    image: ViTConfig = field(default_factory=lambda: vit_models.preset("cpu", image_channels=3, image_size=(32, 32)))
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 64                 # E: the joint space

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        image = {**d["image"], "image_size": tuple(d["image"]["image_size"])}
        return cls(ViTConfig(**image), TextEncoderConfig(**d["text"]), d["embed_dim"])


PRESETS = {
    "tiny": CLIPConfig(vit_models.preset("tiny", image_channels=3, image_size=(32, 32), patch_size=8),
                       text_models.preset("tiny"), embed_dim=16),
    "cpu": CLIPConfig(),
}


def preset(name: str, image_channels: int, image_size: tuple[int, int], vocab_size: int, max_len: int) -> CLIPConfig:
    """A named preset for these images and this tokenizer."""
    if name not in PRESETS:
        raise ValueError(f"unknown CLIP preset {name!r}; choose one of {', '.join(PRESETS)}")
    c = PRESETS[name]
    return CLIPConfig(replace(c.image, image_channels=image_channels, image_size=image_size, num_classes=c.embed_dim),
                      replace(c.text, vocab_size=vocab_size, max_len=max_len), c.embed_dim)


class CLIP(nn.Module):
    """encode_image(x) -> I (B, E); encode_text(ids, mask) -> T (B, E), both unit length;
    model(x, ids, mask) -> the (B, B) logits."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.image = ViT(replace(config.image, num_classes=config.embed_dim))   # head = W_i
        self.text = TextEncoder(config.text)
        self.text_proj = nn.Linear(config.text.dim, config.embed_dim, bias=False)   # W_t
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))          # log(1/τ)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)                                 # (B, E)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(ids, mask)[1]), dim=-1)      # (B, E)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, hard_ids: torch.Tensor | None = None,
                hard_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (B, B) logits of images against captions, and (B, B') against hard-negative captions."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()                    # 1/τ ≤ 100 (Radford et al. §2.5)
        I = self.encode_image(x)                                                   # (B, E)
        logits = scale * I @ self.encode_text(ids, mask).T                         # (B, B)
        hard = scale * I @ self.encode_text(hard_ids, hard_mask).T if hard_ids is not None else None   # (B, B')
        return logits, hard


def info_nce(logits: torch.Tensor, hard: torch.Tensor | None = None, twins: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric contrastive loss of a (B, B) similarity matrix whose matching pairs are on
    its diagonal: the mean of the image->text and text->image cross-entropies; `hard` (B, B'),
    images against hard-negative captions, adds B' more wrong answers to each image's row;
    `twins` (B, B) bool marks pairs that describe the same facts: no wrong answers, left out."""
    target = torch.arange(len(logits), device=logits.device)
    if twins is not None:
        twins = twins & (target[:, None] != target[None, :])                    # the diagonal stays
        logits = logits.masked_fill(twins, float("-inf"))
    rows = logits if hard is None else torch.cat([logits, hard], dim=1)         # (B, B + B')
    return 0.5 * (F.cross_entropy(rows, target) + F.cross_entropy(logits.T, target))
