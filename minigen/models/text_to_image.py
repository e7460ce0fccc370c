"""The text-conditional denoiser: a text encoder whose tokens a U-Net cross-attends to.

Papers:
    Rombach et al. 2022, Latent Diffusion Models, arXiv:2112.10752, §3.3 (a domain encoder τ_θ
        maps the prompt to tokens; the U-Net's cross-attention layers read them)
    Ho & Salimans 2022, Classifier-Free Guidance, arXiv:2207.12598 (the unconditional model is
        the same network given an empty prompt, learned by dropping captions)

    ids (B, L), mask (B, L) -> text encoder (text.py) -> tokens (B, L, D), pooled (B, D)
    x_t, t, tokens, mask    -> U-Net (unet.py) with cross-attention at its attention sites -> output
    pooled -> linear -> added to the U-Net's time embedding, so every ResBlock hears the whole
              prompt (as Imagen and SDXL add a pooled text vector; `pooled`, on by default)

The text encoder is trained with the U-Net (its tokens then learn only what the denoiser needs)
or starts from a trained CLIP's text tower and stays frozen (Stable Diffusion's recipe:
`freeze_text`). Its null condition is the empty prompt: [CLS] and nothing else.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..tokenizer import CLS, PAD
from .text import TextEncoder, TextEncoderConfig
from .unet import UNet, UNetConfig


@dataclass
class TextToImageConfig:
    unet: UNetConfig
    text: TextEncoderConfig
    freeze_text: bool = False           # keep the text encoder as loaded (from a CLIP); else train it too
    pooled: bool = True                 # also add the pooled text vector to the time embedding

    # what a pipeline asks of any denoiser's config
    @property
    def image_channels(self) -> int:
        return self.unet.image_channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.unet.image_size

    @property
    def num_classes(self) -> int:
        return 0                        # conditioned on prompts, not classes

    @classmethod
    def from_dict(cls, d: dict) -> "TextToImageConfig":
        unet = {**d["unet"], **{k: tuple(v) for k, v in d["unet"].items() if isinstance(v, list)}}
        return cls(UNetConfig(**unet), TextEncoderConfig(**d["text"]), d["freeze_text"], d.get("pooled", True))


class TextToImage(nn.Module):
    """model(x_t, t, ids=..., mask=...) -> the U-Net's output of x_t's shape."""

    def __init__(self, config: TextToImageConfig):
        super().__init__()
        if config.unet.context_dim != config.text.dim:
            raise ValueError(f"the U-Net's context_dim {config.unet.context_dim} must be the text encoder's width "
                             f"{config.text.dim}")
        self.config = config
        self.unet = UNet(config.unet)
        self.text = TextEncoder(config.text)
        if config.freeze_text:
            self.text.requires_grad_(False)
        # the pooled vector into the time embedding's width (4·base); zero at first, like the other new branches
        self.pooled = nn.Linear(config.text.dim, 4 * config.unet.base_channels) if config.pooled else None
        if self.pooled is not None:
            nn.init.zeros_(self.pooled.weight)
            nn.init.zeros_(self.pooled.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                w: torch.Tensor | None = None) -> torch.Tensor:
        """w (B,): the guidance scale, for a guidance-distilled U-Net (unet.py)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text):
            tokens, pooled = self.text(ids, mask)                              # (B, L, D), (B, D)
        extra = self.pooled(pooled) if self.pooled is not None else None     # (B, 4·base)
        return self.unet(x, t, context=tokens, context_mask=mask, extra_emb=extra, w=w)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_text:
            self.text.eval()                     # a frozen encoder stays as it was loaded
        return self

    # ---- the model's own conditioning: the empty prompt is "no condition" ------------------------

    @staticmethod
    def empty_prompt(like: torch.Tensor) -> torch.Tensor:
        """ids of the empty prompt, [CLS] then [PAD], one row per row of `like` (B, L)."""
        ids = torch.full_like(like, PAD)
        ids[:, 0] = CLS
        return ids

    def null_condition(self, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        empty = self.empty_prompt(ids)
        return {"ids": empty, "mask": empty != PAD}

    def drop_condition(self, p: float, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """Caption dropout: with probability p an image's caption becomes the empty prompt, so
        one network also learns the unconditional model (for classifier-free guidance)."""
        drop = (torch.rand(len(ids), device=ids.device) < p)[:, None]
        ids = torch.where(drop, self.empty_prompt(ids), ids)
        return {"ids": ids, "mask": ids != PAD}
