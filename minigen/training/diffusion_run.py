"""What the two diffusion trainers share: their settings, the data a latent or text model learns
from (with distill.py), and the pictures they draw.

train_ddpm.py (pixels; Ho et al. 2020) and train_ldm.py (an autoencoder's latents, with class
labels or captions; Rombach et al. 2022) tell two stories with one set of settings: the U-Net,
the optimiser and its schedule, the diffusion process, guidance and the pictures. Each script
extends `DiffusionTrainConfig` with its own settings and writes its training step out itself.
"""

import re
import time
from dataclasses import dataclass

import torch

from ..cli import GUIDANCE, STEPS, at_least, between, non_negative, positive, setting
from ..data import DataConfig
from ..diffusion import PREDICTIONS, Frames, SamplerConfig
from ..diffusion.latent import LatentSpace
from ..diffusion.samplers import frame_caption
from ..diffusion.schedules import NAMES as SCHEDULES
from ..errors import MinigenError
from ..images import save_grid, save_strip
from ..models.unet import PRESETS
from ..progress import progress_bar
from ..tokenizer import Tokenizer
from .lifecycle import RunConfig


@dataclass
class DiffusionTrainConfig(DataConfig, RunConfig):
    preset: str = setting("cpu", "U-Net size", choices=PRESETS)
    dropout: float | None = setting(None, "dropout in the U-Net's ResBlocks (default: the preset's, 0.1; 0 trains "
                                          "about 1.1x faster on a CPU, docs/performance.md)",
                                   check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    attention: str | None = setting(None, "comma-separated feature-map sizes whose U-Net levels get self-attention "
                                          "(and cross-attention to the text), e.g. 8,4 (default: the preset's)",
                                   check=lambda v: None if re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*", v) else
                                   "give feature-map sizes separated by commas, e.g. 8,4")
    steps: int = setting(1200, "total optimizer steps of the run (a resumed run stops at the same step)", runtime=True,
                         check=STEPS)
    batch_size: int = setting(64, "images per step (per process under torchrun)", check=at_least(1))
    lr: float = setting(1e-3, "peak AdamW learning rate", check=positive)
    warmup: int = setting(100, "linear learning-rate warm-up steps, then cosine decay to 0", check=non_negative)
    weight_decay: float = setting(0.0, "AdamW weight decay", check=non_negative)
    grad_clip: float = setting(1.0, "clip the gradient's global norm to this (0: off)", check=non_negative)
    schedule: str = setting("linear", "β schedule", choices=SCHEDULES)
    T: int = setting(1000, "number of diffusion steps", check=between(1, 100_000))
    # v, not ε: with ε-prediction x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t carries the network's error times
    # σ_t = √((1−ᾱ_t)/ᾱ_t), which is > 1 at mid and high noise; ε̂'s error is white, so x̂_0 gets
    # speckles there that DDIM then keeps. v̂ gives x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂: the error is
    # never amplified. Measured on the default glyph run: 20% grainy samples with eps, 0% with v
    # (docs/clean_samples.md).
    prediction: str = setting("v", "what the network predicts: v (velocity, Salimans & Ho 2022), eps (noise, "
                                   "Ho et al. 2020), x0 (clean image)", choices=PREDICTIONS)
    min_snr: float = setting(5.0, "min-SNR-γ loss weighting, Hang et al. 2023 (0: off)", check=non_negative)
    cond_drop: float = setting(0.1, "probability of replacing the label (or caption) by the null one, so the model "
                                    "also learns the unconditional score for classifier-free guidance",
                               check=between(0, 1))
    ema_decay: float = setting(0.999, "largest EMA decay (it warms up from 0); samples use the EMA weights",
                                check=between(0, 1))
    compile: bool = setting(False, "torch.compile the model for training (the plain module is what gets saved)",
                            runtime=True)
    cuda_graphs: bool = setting(False, "with --compile on CUDA: replay the compiled forward and backward as CUDA "
                                       "graphs (mode reduce-overhead; docs/performance.md)", runtime=True)
    channels_last: bool = setting(True, "keep activations in NHWC memory layout (faster convolutions on CPU and GPU)",
                                  runtime=True)
    amp: bool = setting(False, "bf16 autocast (CUDA only)", runtime=True)
    sample_every: int = setting(500, "write a sample grid and reverse-diffusion strip every N steps (0: only at the end)",
                                runtime=True, check=non_negative)
    sample_steps: int = setting(50, "DDIM steps for the progress samples (at most --T)", runtime=True,
                               check=at_least(1))
    guidance: float = setting(3.0, "classifier-free guidance scale w for the progress samples (1: none)", runtime=True,
                              check=GUIDANCE)


def check_settings(cfg: DiffusionTrainConfig, device: torch.device) -> None:
    """What no single flag's range can say: refused in one line before any work."""
    if cfg.sample_steps > cfg.T:
        raise MinigenError(f"--sample-steps {cfg.sample_steps}: must be at most --T {cfg.T}")
    if cfg.cuda_graphs and (device.type != "cuda" or not cfg.compile):
        raise MinigenError("--cuda-graphs: replays compiled CUDA kernels; it needs --compile and a CUDA device")


# ---- the data a latent or text model learns from (train_ldm.py, distill.py) ---------------------

@torch.no_grad()
def latent_moments(latent: LatentSpace, data, flip: bool, device, chunk: int = 500) -> torch.Tensor:
    """μ and log σ² of q(z|x) for every training image, and for its mirror image with --flip:
    (2 if flip else 1, N, 2c, h, w), kept in host memory. The autoencoder is frozen, so they never
    change: encoding each image once, not at every step it is drawn, leaves the training steps
    to the U-Net (1.4-1.5x the images per second on a CPU, docs/text_to_image.md)."""
    views = [False, True] if flip else [False]
    out = []
    for mirrored in views:
        parts = []
        for i in progress_bar(range(0, len(data), chunk), desc="latents" + (" (mirrored)" if mirrored else ""),
                              leave=False):
            x = data.batch(torch.arange(i, min(i + chunk, len(data))))[0].to(device)
            parts.append(torch.cat(latent.moments(x.flip(-1) if mirrored else x), dim=1).cpu())   # (b, 2c, h, w)
        out.append(torch.cat(parts))
    return torch.stack(out)


def captions(data, tokenizer: Tokenizer, seed: int, device):
    """condition(index, step) -> the tokens of each image's caption, in a phrasing drawn anew
    (a pure function of the step, so a resumed run draws the same ones)."""
    def condition(index, step):
        words = data.captions(index, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))
        return dict(zip(("ids", "mask"), (v.to(device) for v in tokenizer.encode(words))))
    return condition


def attention_sizes(flag: str, config) -> tuple[int, ...]:
    """--attention "8,4" -> (8, 4), each the feature-map size (min of H, W) of one of the U-Net's levels."""
    levels = [min(config.image_size) // 2**i for i in range(len(config.channel_mults))]
    sizes = tuple(int(part) for part in flag.split(","))          # the flag's format is checked where it is declared
    if not set(sizes) <= set(levels):
        raise MinigenError(f"--attention {flag}: this U-Net's levels are {','.join(map(str, levels))} pixels wide")
    return sizes


# ---- pictures -------------------------------------------------------------------------------------

def draw(pipe, x_T, cond: dict, cfg, progress: bool = False):
    """Guided DDIM samples from x_T, and the reverse process of the first one as a strip of
    x_T and ten frames, each captioned with the timestep its image is at. A latent model's
    strip shows the decoded x̂_0 of each step instead (a decoded noisy latent is no picture)."""
    sampler = SamplerConfig("ddim", steps=cfg.sample_steps, clip_x0=pipe.clip_x0)
    frames = Frames()
    x = sampler.sample(pipe.denoiser(cfg.guidance), x_T, cond=cond, callback=frames, progress=progress)
    strip, captions = frames.strip(10, of="x_t" if pipe.latent is None else "x0")
    t_T = sampler.timesteps(pipe.diffusion)[0]
    first = x_T[:1] if pipe.latent is None else pipe.to_pixels(torch.zeros_like(x_T[:1]))   # latent: D(0), the mean
    return pipe.to_pixels(x), torch.cat([first.cpu(), pipe.to_pixels(strip).cpu()]), [frame_caption(t_T)] + captions


def forward_picture(run, pipe, x0: torch.Tensor, generator) -> None:
    """OUT/forward.png: one training image (C, H, W; a latent for a latent model) noised at ten
    evenly spaced t, decoded to pixels."""
    frames, ts = pipe.diffusion.forward_strip(x0, frames=10, generator=generator)
    path = save_strip(pipe.to_pixels(frames), run.out / "forward.png", captions=[frame_caption(t) for t in ts])
    run.say(f"wrote {path} (the forward process on one training image"
            + (", each frame decoded)" if pipe.latent is not None else ")"))


def preview_pictures(run, pipe, x_T, cond: dict, cfg, step: int, captions=None) -> None:
    """The progress pictures of step `step`: OUT/samples/step_N.png and OUT/strips/step_N.png."""
    x, strip, strip_captions = draw(pipe, x_T, cond, cfg)
    save_grid(x, run.out / "samples" / f"step_{step:06d}.png", nrow=10, captions=captions)
    save_strip(strip, run.out / "strips" / f"step_{step:06d}.png", captions=strip_captions)


def final_pictures(run, pipe, x_T, cond: dict, cfg, row_labels=None) -> None:
    """OUT/samples.png (ten per row) and OUT/reverse.png at the end of a run, with the sampling speed."""
    began = time.perf_counter()
    x, strip, captions = draw(pipe, x_T, cond, cfg, progress=True)
    seconds = time.perf_counter() - began
    grid = save_grid(x, run.out / "samples.png", nrow=10, row_labels=row_labels)
    strip = save_strip(strip, run.out / "reverse.png", captions=captions)
    run.say(f"wrote {grid} (DDIM {cfg.sample_steps} steps, guidance {cfg.guidance}, {len(x) / seconds:.1f} images/s) "
            f"and {strip}")
    run.say(f"checkpoint: {run.ckpt_path}; sample more with: python sample.py --ckpt {run.ckpt_path}")
