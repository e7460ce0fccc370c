"""Differentiable augmentation for GAN discriminators (Zhao et al. 2020, DiffAugment, arXiv:2006.10738).

D sees augmented real *and* augmented fake images, and the augmentations are differentiable,
so G's gradient flows through them. D can then no longer memorise the training images (its
overfitting is what makes small-data GANs collapse), while G is still asked to produce
un-augmented images: augmenting only the reals would teach G to produce augmented images.

    color        brightness ± 0.5, saturation × [0, 2] (RGB only), contrast × [0.5, 1.5]
    translation  shift by up to 1/8 of the image, zero-padded
    cutout       zero a random square of half the image's side
"""

import torch

POLICIES = ("color", "translation", "cutout")


def color(x: torch.Tensor) -> torch.Tensor:
    B = x.shape[0]
    x = x + (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)                 # brightness
    if x.shape[1] == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    B, C, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (B, 1, 1), device=x.device)
    rows = (torch.arange(H, device=x.device)[None, :, None] + dy).clamp(-1, H)   # (B, H, 1); −1 and H: padding
    cols = (torch.arange(W, device=x.device)[None, None, :] + dx).clamp(-1, W)   # (B, 1, W)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))                            # (B, C, H+2, W+2), zeros around
    b = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows + 1, cols + 1].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    B, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    top = torch.randint(0, H + 1 - ch % 2, (B, 1, 1), device=x.device) - ch // 2   # may hang over an edge
    left = torch.randint(0, W + 1 - cw % 2, (B, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(H, device=x.device)[None, :, None]
    xs = torch.arange(W, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)       # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Apply the comma-separated policies in order, e.g. "translation,cutout"; "" does nothing."""
    for name in filter(None, policy.split(",")):
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}; choose from {', '.join(POLICIES)}")
        x = {"color": color, "translation": translation, "cutout": cutout}[name](x)
    return x
