"""Diffusion: the process, its schedules, the sampling loop, guidance and editing.

    schedules.py   β schedules (linear, cosine, sigmoid)
    process.py     Diffusion: q(x_t | x_0), the loss, every reverse step (DDPM, DDIM, consistency)
    guidance.py    the denoiser (x_t, t, **cond) -> x̂_0, ε̂, and the guidance wrapped around it
    samplers.py    the one sampling loop, SamplerConfig, frames for pictures
    editing.py     inpainting, SDEdit and inversion, made of the loop's pieces
    distillation.py  progressive distillation's target and loss (a student halves the steps)
"""

from .guidance import (ClassifierFreeGuidance, ClassifierGuidance, Denoised, Denoiser, GuidanceInput, LossGuidance,
                       Thresholding)
from .process import PREDICTIONS, SPACINGS, Diffusion, DiffusionConfig
from .samplers import SAMPLERS, Frames, SamplerConfig, sample

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance", "Denoised", "Denoiser", "Diffusion", "DiffusionConfig",
           "Frames", "GuidanceInput", "LossGuidance", "PREDICTIONS", "SAMPLERS", "SPACINGS", "SamplerConfig", "Thresholding", "sample"]
