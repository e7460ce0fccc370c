"""The reverse process: one sampling loop, the steps it can take, and the timesteps it visits.

Papers:
    Ho, Jain & Abbeel 2020, DDPM, arXiv:2006.11239, Algorithm 2 (ancestral sampling)
    Song, Meng & Ermon 2021, DDIM, arXiv:2010.02502, Eq. 12
    Lugmayr et al. 2022, RePaint, arXiv:2201.09865 (timesteps that jump back up the chain)
    Lu et al. 2022, DPM-Solver++, arXiv:2211.01095, Algorithm 2 (a second-order multistep step)
    Song et al. 2023, Consistency Models, arXiv:2303.01469, Algorithm 1 (multistep consistency sampling)

    x_T ~ N(0, I)
    for t, t_prev in the visited timesteps:
        x̂_0, ε̂ = denoiser(x_t, t, **cond)
        x_{t_prev} = μ(x_t, x̂_0, ε̂) + σ·z,   z ~ N(0, I), no noise on the last step

`sample` is that loop and nothing more: the denoiser (with whatever guidance wraps it,
guidance.py), the step (DDPM's, DDIM's or consistency sampling's, all from process.py;
DPM-Solver++(2M), which keeps a short history, below), the timesteps (any descending list:
respaced, or starting part-way down for SDEdit), a per-step projection (inpainting puts
the known pixels back) and a callback (progress pictures) come in from outside, so a new
sampler, a new kind of conditioning or a new edit adds no parameter here.
"""

import math
from dataclasses import dataclass, field

import torch

from ..progress import progress_bar
from ..seeds import normal
from .guidance import Thresholding
from .process import Diffusion

SAMPLERS = ("ddpm", "ddim", "dpm++", "cm")
VARIANCES = ("small", "large")


def make_step(diffusion: Diffusion, sampler: str = "ddim", eta: float = 0.0, variance: str = "small"):
    """step(d: Denoised, t, t_prev) -> (mean, std) of p(x_{t_prev} | x_t).
    ddpm: the posterior q(x_{t_prev} | x_t, x̂_0) with σ² = β̃ ("small") or β ("large");
    ddim: Song et al. Eq. 12 with η ∈ [0, 1] (η = 0 deterministic);
    dpm++: DPM-Solver++(2M), deterministic, a new one per sampling run (it remembers the last step);
    cm: multistep consistency sampling (Song et al. 2023, Algorithm 1): x̂_0, then noised afresh
    to the next timestep, x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev)·z, for consistency students."""
    if sampler == "ddpm":
        return lambda d, t, t_prev: diffusion.ddpm_step(d.x_t, d.x0, t, t_prev, variance)
    if sampler == "ddim":
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], not {eta}")
        return lambda d, t, t_prev: diffusion.ddim_step(d.x0, d.eps, t, t_prev, eta)
    if sampler == "dpm++":
        return DPMSolverPP(diffusion)
    if sampler == "cm":
        return lambda d, t, t_prev: diffusion.consistency_step(d.x0, t, t_prev)
    raise ValueError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")


@torch.no_grad()
def sample(denoiser, x_T: torch.Tensor, timesteps: list[int], step, *, cond: dict | None = None, generator=None,
           project=None, callback=None, progress: bool = True) -> torch.Tensor:
    """Run the reverse process from x_T (at timesteps[0]) down the descending `timesteps`; the
    step after the last one lands on clean data (t = −1). Where the list goes back up (RePaint's
    resampling), x is noised forward instead: q(x_s | x_t) = N(√(ᾱ_s/ᾱ_t)·x_t, (1 − ᾱ_s/ᾱ_t)·I).
    project(x, t) after each step; callback(t, x_t, x̂_0) with the timestep x_t is now at."""
    diffusion, cond = denoiser.diffusion, cond or {}
    ts = list(timesteps) + [-1]
    noise = lambda: normal(x_T.shape, generator, x_T.device)                 # noqa: E731 - one generator or one per image
    x = x_T
    for t, t_prev in progress_bar(list(zip(ts[:-1], ts[1:])), desc="sampling", disable=not progress, leave=False):
        if t_prev > t:                                           # a jump back up the chain (RePaint)
            x = diffusion.q_jump(x, t, t_prev, noise())
            continue
        d = denoiser(x, t, **cond)                               # x̂_0, ε̂ at (x_t, t)
        mean, std = step(d, t, t_prev)                           # p(x_{t_prev} | x_t)
        x = mean + std * noise() if t_prev >= 0 else mean        # Algorithm 2, line 4: no noise at the end
        if project is not None:
            x = project(x, t_prev)
        if callback is not None:
            callback(t_prev, x, d.x0)
    return x


class DPMSolverPP:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the probability-flow ODE solved in
    λ_t = log(α_t/σ_t), the half log-SNR, with α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t). Written for the
    data prediction x̂_0 (whatever the network predicts, the denoiser gives x̂_0), the ODE is
    linear in x and its linear part is integrated exactly; only x̂_0 is approximated:
        h     = λ_{t_prev} − λ_t                                         (step size in λ)
        x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D                 (Algorithm 2)
    with D = x̂_0 (first order: this is DDIM) on the first step, and afterwards the multistep
    extrapolation of x̂_0 to the middle of the step from this step's and the last step's:
        r = h_last/h,   D = (1 + 1/(2r))·x̂_0 − (1/(2r))·x̂_0,last
    The last step lands on clean data (σ = 0, λ = ∞), where the update is x̂_0 itself (as in
    DDIM; Lu et al. also take the last step at first order). A step that does not continue
    where the last one ended (RePaint jumps back up) starts again at first order."""

    def __init__(self, diffusion: Diffusion):
        self.diffusion = diffusion
        self.last = None                    # (t, t_prev, x̂_0) of the previous step

    def lam(self, t: int) -> float:
        ab = self.diffusion.alpha_bar_at(t)
        return 0.5 * math.log(ab / (1 - ab))                          # λ_t = log(α_t/σ_t)

    def __call__(self, d, t: int, t_prev: int) -> tuple[torch.Tensor, float]:
        last, self.last = self.last, (t, t_prev, d.x0)
        if t_prev < 0:
            return d.x0, 0.0
        ab, ab_prev = self.diffusion.alpha_bar_at(t), self.diffusion.alpha_bar_at(t_prev)
        h = self.lam(t_prev) - self.lam(t)
        D = d.x0
        if last is not None and last[1] == t:                         # continues the previous step
            r = (self.lam(t) - self.lam(last[0])) / h
            D = (1 + 1 / (2 * r)) * d.x0 - (1 / (2 * r)) * last[2]
        x_prev = ((1 - ab_prev) / (1 - ab)) ** 0.5 * d.x_t - ab_prev**0.5 * math.expm1(-h) * D
        return x_prev, 0.0


@dataclass
class SamplerConfig:
    """How to sample: which step, how many network evaluations at which timesteps, and how
    x̂_0 is kept in range. `sample` puts it together for a denoiser."""
    sampler: str = "ddim"                       # one of SAMPLERS
    steps: int = 50                             # network evaluations
    eta: float = 0.0                            # DDIM noise: 0 deterministic, 1 DDPM-like
    spacing: str = "trailing"                   # one of process.SPACINGS
    variance: str = "small"                     # DDPM: posterior β̃ ("small") or β ("large")
    clip_x0: bool = True                        # clip x̂_0 to [−1, 1]
    dynamic_threshold: float | None = None      # or threshold it dynamically at this percentile

    def timesteps(self, diffusion: Diffusion) -> list[int]:
        return diffusion.timesteps(self.steps, self.spacing).tolist()

    def step(self, diffusion: Diffusion):
        return make_step(diffusion, self.sampler, self.eta, self.variance)

    def threshold(self, denoiser):
        if self.clip_x0 or self.dynamic_threshold is not None:
            return Thresholding(denoiser, self.clip_x0, self.dynamic_threshold)
        return denoiser

    def sample(self, denoiser, x_T: torch.Tensor, timesteps: list[int] | None = None, **loop) -> torch.Tensor:
        """`sample` with this config's step, thresholding and timesteps (or the ones given)."""
        d = denoiser.diffusion
        ts = self.timesteps(d) if timesteps is None else timesteps
        return sample(self.threshold(denoiser), x_T, ts, self.step(d), **loop)


def frame_caption(t: int) -> str:
    """The caption of a frame of the reverse process: the timestep its image is at."""
    return "x_0" if t < 0 else f"t={t}"


@dataclass
class Frames:
    """A sampling callback that keeps each step's x_t and x̂_0 on the CPU, with the timestep
    each x_t is at (t_prev of its step; −1 for the clean result)."""
    t: list = field(default_factory=list)
    x_t: list = field(default_factory=list)
    x0: list = field(default_factory=list)

    def __call__(self, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        self.t.append(t)
        self.x_t.append(x_t.cpu())
        self.x0.append(x0.cpu())

    def picks(self, n: int) -> list[int]:
        """n evenly spaced frame indices, the last frame included."""
        return torch.linspace(0, len(self.t) - 1, min(n, len(self.t))).round().long().tolist()

    def strip(self, n: int = 10, image: int = 0, of: str = "x_t") -> tuple[torch.Tensor, list[str]]:
        """n frames of one image (n, C, H, W), x_t or (`of="x0"`) the x̂_0 predicted on the way
        there, and their captions."""
        picks = self.picks(n)
        kept = self.x_t if of == "x_t" else self.x0
        return torch.stack([kept[i][image] for i in picks]), [frame_caption(self.t[i]) for i in picks]
