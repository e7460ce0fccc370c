"""Editing images with a trained diffusion model: inpainting, image-to-image, guidance by a loss.

Papers:
    Lugmayr et al. 2022, RePaint: Inpainting using Denoising Diffusion Probabilistic Models,
        arXiv:2201.09865 (replace the known pixels by the forward-noised original at every step,
        and resample: jump back up and denoise again, so the filled region agrees with the rest)
    Meng et al. 2022, SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
        Equations, arXiv:2108.01073 (noise an input to an intermediate time, then denoise it)
    Song et al. 2021, DDIM, arXiv:2010.02502, §4.3 (deterministic inversion, in diffusion.py)
    The seeds' colour guidance (after Dhariwal & Nichol 2021's classifier guidance): nudge x_t
        down the gradient of a loss on the predicted x̂_0 before each step.

All functions take the same `model`, `Diffusion` and label/guidance arguments as
Diffusion.sample, so they work with any trained checkpoint (not an inpainting-trained one).

Left out: classifier guidance with a noise-aware classifier (the ViT here is trained on clean
images only), and RePaint's exact jump schedule generator: resampling here repeats each block
of `jump_length` steps `resample` times, which is its schedule with one jump size.
"""

import torch

from .diffusion import Diffusion
from .runtime import progress_bar


def inpaint(d: Diffusion, model, x0: torch.Tensor, keep: torch.Tensor, steps: int | None = None,
            jump_length: int = 10, resample: int = 1, generator: torch.Generator | None = None,
            y=None, guidance: float = 1.0, null_label: int | None = None, clip_x0: bool = True,
            progress: bool = True) -> torch.Tensor:
    """Fill the pixels where keep = 0 so they agree with the known pixels (keep = 1) of x0.

    x0: (B, C, H, W) in [-1, 1]; keep: broadcastable to x0, 1 = known, 0 = regenerate.
    Each step down (RePaint Algorithm 1):
        x_prev^known   = √ᾱ_prev·x_0 + √(1 − ᾱ_prev)·ε          (the original, noised to t_prev)
        x_prev^unknown ~ p(x_prev | x_t)                          (an ordinary DDPM step)
        x_prev         = keep ⊙ x_prev^known + (1 − keep) ⊙ x_prev^unknown
    Resampling: after each block of `jump_length` steps, the block is undone `resample − 1` times
    by a forward jump q(x_s | x_ℓ) = N(√(ᾱ_s/ᾱ_ℓ)·x_ℓ, (1 − ᾱ_s/ᾱ_ℓ)·I) and denoised again, giving
    the unknown region time to agree with the known one. At the end the known pixels are x0 exactly.
    """
    keep = keep.to(x0.dtype).expand_as(x0)
    device = x0.device
    ts = d.timesteps(steps or d.T, "trailing").tolist() + [-1]             # descending, ending at clean data
    noise = lambda: torch.randn(x0.shape, generator=generator, device=device)

    def down(x, t, t_prev):
        bt = d._batch_t(t, x)
        out = d.model_output(model, x, bt, y, guidance, null_label)
        x0_pred, _ = d.x0_eps_from_output(out, x, bt)
        x0_pred = d.threshold(x0_pred, clip_x0, None)
        mean, std = d.ddpm_step(x, x0_pred, t, t_prev)
        unknown = mean + std * noise() if t_prev >= 0 else mean
        known = d.q_sample(x0, d._batch_t(t_prev, x), noise()) if t_prev >= 0 else x0
        return keep * known + (1 - keep) * unknown

    x = noise()
    blocks = [ts[i:i + jump_length + 1] for i in range(0, len(ts) - 1, jump_length)]   # overlapping ends
    bar = progress_bar(total=sum(len(b) - 1 for b in blocks) * resample, desc="inpaint", disable=not progress, leave=False)
    with torch.no_grad():
        for block in blocks:
            for r in range(resample):
                for t, t_prev in zip(block[:-1], block[1:]):
                    x = down(x, t, t_prev)
                    bar.update(1)
                if r < resample - 1 and block[-1] >= 0:                     # jump back up to the block's start
                    ratio = d.alpha_bar_at(block[0]) / d.alpha_bar_at(block[-1])
                    x = ratio**0.5 * x + (1 - ratio) ** 0.5 * noise()
    bar.close()
    return x


def sdedit(d: Diffusion, model, x_init: torch.Tensor, strength: float, steps: int = 50,
           generator: torch.Generator | None = None, **sample_kwargs) -> torch.Tensor:
    """Image-to-image (Meng et al. 2022): noise x_init to t_0 = strength·T, then denoise with DDIM.

    strength 0 returns x_init untouched; strength 1 starts from pure noise N(0, I) and ignores
    x_init; in between, low strengths keep the layout and change details, high ones keep little.
    `steps` DDIM steps over the whole chain; those above t_0 are skipped."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], not {strength}")
    if strength == 0.0:
        return x_init.clone()
    t0 = round(strength * d.T) - 1
    ts = [t for t in d.timesteps(steps, "trailing").tolist() if t <= t0]
    if not ts or ts[0] != t0:
        ts = [t0] + ts
    noise = torch.randn(x_init.shape, generator=generator, device=x_init.device)
    x_t = noise if strength == 1.0 else d.q_sample(x_init, d._batch_t(t0, x_init), noise)
    return d.sample(model, x_init.shape, sampler="ddim", timesteps=ts, x_T=x_t, generator=generator,
                    device=x_init.device, **sample_kwargs)


def colour_loss(target) -> callable:
    """Mean absolute distance of x̂_0 from a colour (one value per channel, in [-1, 1]), as in the
    seeds' colour-guidance example: minimising it pulls the whole image towards that colour."""
    target = torch.as_tensor(target, dtype=torch.float32)

    def loss(x0_pred: torch.Tensor) -> torch.Tensor:
        return (x0_pred - target.to(x0_pred).view(1, -1, 1, 1)).abs().mean()
    return loss
