"""Editing images with a trained diffusion model: inpainting, image-to-image, inversion, colour.

Papers:
    Lugmayr et al. 2022, RePaint: Inpainting using Denoising Diffusion Probabilistic Models,
        arXiv:2201.09865 (replace the known pixels by the forward-noised original at every step,
        and resample: jump back up and denoise again, so the filled region agrees with the rest)
    Meng et al. 2022, SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
        Equations, arXiv:2108.01073 (noise an input to an intermediate time, then denoise it)
    Song et al. 2021, DDIM, arXiv:2010.02502, §4.3 (deterministic inversion)

Inpainting and SDEdit are the sampling loop of samplers.py with another start, other
timesteps or a per-step projection, so every sampler, guidance and option works for them;
this file only makes those pieces. Inversion runs the deterministic DDIM step backwards, x_0 ->
x_T, through the same denoiser (so guidance and conditioning work for it too); it has its own
short loop because it climbs the chain and evaluates ε̂ at the level it is climbing to.

Works with any trained checkpoint (not an inpainting-trained one). Left out: RePaint's exact
jump schedule generator: resampling here repeats each block of `jump_length` steps `resample`
times, which is its schedule with one jump size.
"""

import torch

from ..progress import progress_bar
from ..seeds import normal
from .process import Diffusion


# jump length j and resamplings r: Lugmayr et al. 2022 use j = 10, r = 10; r = 5 halves the cost
REPAINT_JUMP, REPAINT_RESAMPLE = 10, 5


def repaint_timesteps(timesteps: list[int], jump_length: int, resample: int) -> list[int]:
    """The timesteps RePaint visits: the descending `timesteps` in blocks of `jump_length`
    steps, each block walked `resample` times, jumping back up to its start in between
    (RePaint Algorithm 1, §4.2). The last block, which ends on clean data, is walked once."""
    ts = list(timesteps) + [-1]
    visited = [ts[0]]
    for i in range(0, len(ts) - 1, jump_length):
        block = ts[i:i + jump_length + 1]                                 # overlapping ends
        for r in range(resample if block[-1] >= 0 else 1):
            if r:
                visited.append(block[0])                                  # jump back up to the block's start
            visited += block[1:]
    return visited[:-1]                                                   # the loop's last step lands on −1


def repaint_projection(diffusion: Diffusion, x0: torch.Tensor, keep: torch.Tensor, generator=None):
    """project(x, t) for the sampling loop: after each step down to t, the known pixels (keep = 1)
    become the original x0 noised to t (RePaint Algorithm 1, line 5):
        x_t = keep ⊙ (√ᾱ_t·x_0 + √(1 − ᾱ_t)·ε) + (1 − keep) ⊙ x_t,    and x0 itself at t = −1."""
    keep = keep.to(x0.dtype).expand_as(x0)

    def project(x: torch.Tensor, t: int) -> torch.Tensor:
        if t < 0:
            known = x0
        else:
            noise = normal(x0.shape, generator, x0.device)
            known = diffusion.q_sample(x0, diffusion.batch_t(t, x), noise)
        return keep * known + (1 - keep) * x
    return project


def sdedit_start(diffusion: Diffusion, x_init: torch.Tensor, strength: float, timesteps: list[int],
                 generator=None) -> tuple[torch.Tensor, list[int]]:
    """Image-to-image (Meng et al. 2022): x_init noised to t_0 = strength·T, and the timesteps
    below t_0 to denoise it along. Sample from there with any sampler.

    strength 0 returns x_init and no timesteps; strength 1 starts from pure noise N(0, I) and
    ignores x_init; in between, low strengths keep the layout and change details."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], not {strength}")
    if strength == 0.0:
        return x_init.clone(), []
    t0 = round(strength * diffusion.T) - 1
    ts = [t for t in timesteps if t <= t0]
    if not ts or ts[0] != t0:
        ts = [t0] + ts
    noise = normal(x_init.shape, generator, x_init.device)
    x_t0 = noise if strength == 1.0 else diffusion.q_sample(x_init, diffusion.batch_t(t0, x_init), noise)
    return x_t0, ts                                       # x_t0 = √ᾱ_t0·x_init + √(1 − ᾱ_t0)·ε


@torch.no_grad()
def ddim_invert(denoiser, x0: torch.Tensor, timesteps: list[int], *, cond: dict | None = None, refine: int = 0,
                progress: bool = True, callback=None) -> torch.Tensor:
    """Run deterministic DDIM (η = 0) backwards, x_0 -> x_T, over the descending `timesteps` a
    sampler would visit.

    Each step climbs from s to t by the DDIM step solved for its start (process.ddim_step_up),
        x_t = √(ᾱ_t/ᾱ_s)·(x_s − c·ε̂(x_t, t)),   c = √(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1−ᾱ_t);
    ε̂(x_t, t) needs the unknown x_t; the usual inversion (Song et al. §4.3, Dhariwal & Nichol
    2021 App. F) evaluates it at x_s instead. `refine` extra fixed-point iterations re-evaluate
    ε̂ at the current estimate of x_t, which makes the inversion exact where they converge.
    Sampling with η = 0 from the result returns x_0 (without thresholding: clip_x0=False).
    callback(t, x_t) after each step up (progress, and a place to stop: an exception it raises
    ends the inversion there)."""
    diffusion, cond = denoiser.diffusion, cond or {}
    levels = [-1] + list(reversed(timesteps))                             # ascending, from clean data
    x = x0
    for s, t in progress_bar(list(zip(levels[:-1], levels[1:])), desc="ddim inversion", disable=not progress, leave=False):
        x_t = x
        for _ in range(1 + refine):
            x_t = diffusion.ddim_step_up(x, denoiser(x_t, t, **cond).eps, s, t)
        x = x_t
        if callback is not None:
            callback(t, x)
    return x


def colour_loss(target) -> callable:
    """Mean absolute distance of x̂_0 from a colour (one value per channel, in [-1, 1]): as loss
    guidance (guidance.LossGuidance) it pulls the whole image towards that colour."""
    target = torch.as_tensor(target, dtype=torch.float32)

    def loss(x0_pred: torch.Tensor) -> torch.Tensor:
        return (x0_pred - target.to(x0_pred).view(1, -1, 1, 1)).abs().mean()
    return loss


def clip_loss(encode_image, target: torch.Tensor) -> callable:
    """Σ over images of 1 − cos(E_img(x̂_0), T): as loss guidance it pulls each sample towards a
    prompt's embedding T (E,) in a CLIP's joint space (CLIP guidance, as in
    Nichol et al. 2022's GLIDE §3.2, there with a noise-aware CLIP; here the clean-image CLIP on
    x̂_0). A sum, not a mean: each image's pull does not depend on how many are drawn."""
    def loss(x0_pred: torch.Tensor) -> torch.Tensor:
        return (1 - encode_image(x0_pred) @ target.to(x0_pred)).sum()
    return loss
