"""Gaussian diffusion: the forward process, its training loss, and one reverse step of DDPM and DDIM.

Papers (formulas below cite them by equation):
    Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models, arXiv:2006.11239
    Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, arXiv:2010.02502
    Nichol & Dhariwal 2021, Improved DDPM, arXiv:2102.09672 (respacing, fixed-large variance)
    Salimans & Ho 2022, Progressive Distillation, arXiv:2202.00512 (v-prediction)
    Hang et al. 2023, Min-SNR weighting, arXiv:2303.09556
    Lin et al. 2024, Common Diffusion Noise Schedules and Sample Steps are Flawed,
        arXiv:2305.08891 (the "trailing" timestep spacing)

This file is the math of the process; nothing here knows about a network's architecture or
how it is conditioned. The sampling loop is in samplers.py, guidance in guidance.py.

Indices are 0-based: t = 0..T−1, and "t = −1" stands for the clean data, where ᾱ = 1.

Left out: learned variances (Nichol & Dhariwal's hybrid loss) and continuous time.
"""

from dataclasses import dataclass

import torch

from .schedules import make_betas

PREDICTIONS = ("eps", "x0", "v")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class DiffusionConfig:
    """What defines a diffusion process: saved in checkpoints beside the network's own config."""
    schedule: str = "linear"       # β schedule, one of schedules.NAMES
    T: int = 1000                  # number of diffusion steps
    prediction: str = "eps"        # what the network predicts, one of PREDICTIONS


class Diffusion:
    """The schedule tables, the forward process q, the loss, and the reverse steps.

    ᾱ is read in two ways, one per kind of caller:
      - training and distillation have a timestep per image, a tensor t (B,): `_at(table, t, x)`
        gathers the tables on the device and casts to the images' dtype, so no value ever travels
        to the host (a GPU never waits, and torch.compile sees one graph); `alpha_sigma` adds
        t = −1 (clean data);
      - a sampler step has one t for the whole batch: `alpha_bar_at(t)` is a Python float
        (float64), read from a host copy of ᾱ made once.
    All tables are float64 tensors of shape (T,), made on the CPU and moved once to the model's
    device with `to(device)`.
    """

    TABLES = ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr",
              "sigma")

    def __init__(self, betas: torch.Tensor, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
        betas = betas.to(torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor of values in (0, 1)")
        self.prediction = prediction
        self.config = None                                                   # set by from_config
        self.T = len(betas)
        self.betas = betas                                                   # β_t
        self.alphas = 1 - betas                                              # α_t = 1 − β_t
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)                   # ᾱ_t = Π_{s≤t} α_s
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])  # ᾱ_{t−1}, ᾱ_{−1} = 1
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1 - self.alpha_bar).sqrt()
        self.snr = self.alpha_bar / (1 - self.alpha_bar)                     # SNR(t) = ᾱ_t / (1 − ᾱ_t)
        self.sigma = self.snr.rsqrt()      # σ_t = √((1 − ᾱ_t)/ᾱ_t): the noise level of x_t/√ᾱ_t (Karras et al. 2022)
        self._alpha_bar_host = self.alpha_bar.tolist()                       # Python floats, for the samplers

    def to(self, device) -> "Diffusion":
        """Move the tables to `device` (in float64; float32 on Apple's MPS, which has no float64)."""
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        for name in self.TABLES:
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        return self

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "Diffusion":
        diffusion = cls(make_betas(config.schedule, config.T), prediction=config.prediction)
        diffusion.config = config
        return diffusion

    # ---- helpers -------------------------------------------------------------------------

    def _at(self, table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """table[t] for a batch of timesteps t (B,), gathered on t's device, cast to x's dtype and
        shaped (B, 1, 1, ...) to broadcast against x. Tables left on another device are copied
        there at every call: call `to(device)` once instead."""
        if table.device != t.device:
            table = table.to(t.device)
        return table[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def alpha_bar_at(self, t: int) -> float:
        """ᾱ_t for one timestep, with ᾱ_{−1} = 1 (clean data), as a Python float (float64)."""
        return 1.0 if t < 0 else self._alpha_bar_host[t]

    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) for a timestep per image, t (B,), with t = −1 meaning clean
        data (1, 0), shaped (B, 1, 1, ...) to broadcast against x."""
        clean = t < 0
        t = t.clamp(min=0)
        alpha = torch.where(clean, 1.0, self.sqrt_alpha_bar.to(t.device)[t])
        sigma = torch.where(clean, 0.0, self.sqrt_one_minus_alpha_bar.to(t.device)[t])
        shape = (-1, *([1] * (x.dim() - 1)))
        return alpha.to(x.dtype).reshape(shape), sigma.to(x.dtype).reshape(shape)

    def batch_t(self, t: int, x: torch.Tensor) -> torch.Tensor:
        """One timestep t for every image of the batch x: (B,) long, on x's device."""
        return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)

    # ---- forward process -------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(√ᾱ_t·x_0, (1 − ᾱ_t)·I):
        x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε                                       (Ho et al. Eq. 4)"""
        noise = torch.randn_like(x0) if noise is None else noise
        return self._at(self.sqrt_alpha_bar, t, x0) * x0 + self._at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def forward_strip(self, x0: torch.Tensor, frames: int = 10,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
        """One image (C, H, W) noised at `frames` evenly spaced t (one noise map for all, so the
        picture shows the signal fading): returns (frames, C, H, W) and the t values."""
        ts = torch.linspace(0, self.T - 1, frames).round().long()
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x = x0.expand(frames, *x0.shape)                                     # (C, H, W) -> (F, C, H, W)
        return self.q_sample(x, ts.to(x0.device), noise.expand_as(x)), ts.tolist()

    # ---- parameterisations: ε, x_0 and v, each from the others ------------------------------

    def x0_from_eps(self, x_t, t, eps):
        """x_0 = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t                                 (Ho et al. Eq. 4, solved for x_0)"""
        return (x_t - self._at(self.sqrt_one_minus_alpha_bar, t, x_t) * eps) / self._at(self.sqrt_alpha_bar, t, x_t)

    def eps_from_x0(self, x_t, t, x0):
        """ε = (x_t − √ᾱ_t·x_0) / √(1 − ᾱ_t)"""
        return (x_t - self._at(self.sqrt_alpha_bar, t, x_t) * x0) / self._at(self.sqrt_one_minus_alpha_bar, t, x_t)

    def v_from(self, x0, t, eps):
        """v = √ᾱ_t·ε − √(1 − ᾱ_t)·x_0                                       (Salimans & Ho 2022, §4)"""
        return self._at(self.sqrt_alpha_bar, t, x0) * eps - self._at(self.sqrt_one_minus_alpha_bar, t, x0) * x0

    def x0_from_v(self, x_t, t, v):
        """x_0 = √ᾱ_t·x_t − √(1 − ᾱ_t)·v   (since x_t = √ᾱ·x_0 + √(1−ᾱ)·ε and √ᾱ² + √(1−ᾱ)² = 1)"""
        return self._at(self.sqrt_alpha_bar, t, x_t) * x_t - self._at(self.sqrt_one_minus_alpha_bar, t, x_t) * v

    def eps_from_v(self, x_t, t, v):
        """ε = √(1 − ᾱ_t)·x_t + √ᾱ_t·v"""
        return self._at(self.sqrt_one_minus_alpha_bar, t, x_t) * x_t + self._at(self.sqrt_alpha_bar, t, x_t) * v

    def x0_eps_from_output(self, out, x_t, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the network output in this Diffusion's parameterisation."""
        if self.prediction == "eps":
            return self.x0_from_eps(x_t, t, out), out
        if self.prediction == "x0":
            return out, self.eps_from_x0(x_t, t, out)
        return self.x0_from_v(x_t, t, out), self.eps_from_v(x_t, t, out)

    # ---- training ----------------------------------------------------------------------------

    def loss(self, model, x0: torch.Tensor, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             min_snr_gamma: float | None = None, **model_kwargs) -> torch.Tensor:
        """The simple loss ‖target − model(x_t, t)‖², averaged (Ho et al. Eq. 14, Algorithm 1).

        target: ε ("eps"), x_0 ("x0") or v ("v"). With min_snr_gamma = γ each image's loss is
        weighted so that, expressed as an x_0 loss, its weight is min(SNR(t), γ)  (Hang et al. 2023):
            eps: min(SNR, γ)/SNR     x0: min(SNR, γ)     v: min(SNR, γ)/(SNR + 1)
        """
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, t, **model_kwargs)
        target = {"eps": noise, "x0": x0, "v": self.v_from(x0, t, noise)}[self.prediction]
        per_image = (out.float() - target.float()).pow(2).flatten(1).mean(1)   # (B,)
        if min_snr_gamma is not None:
            snr = self._at(self.snr, t, per_image).reshape(-1)
            clipped = snr.clamp(max=min_snr_gamma)
            weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]
            per_image = per_image * weight
        return per_image.mean()

    # ---- sampling ----------------------------------------------------------------------------

    def timesteps(self, steps: int, spacing: str = "trailing") -> torch.Tensor:
        """The descending timesteps a sampler visits (Lin et al. 2024, Table 2). For T=1000, 50 steps:
            leading   980, 960, ..., 0       (DDIM's original spacing: t = i·T/N)
            trailing  999, 979, ..., 19      (starts at the last, noisiest step)
            linspace  999, ..., 0            (round(linspace(0, T−1, N)))"""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be between 1 and T = {self.T}, not {steps}")
        if spacing == "leading":
            ts = torch.arange(steps) * (self.T // steps)
        elif spacing == "trailing":
            ts = (torch.arange(self.T, 0, -self.T / steps, dtype=torch.float64).round() - 1).long().flip(0)
        elif spacing == "linspace":
            ts = torch.linspace(0, self.T - 1, steps, dtype=torch.float64).round().long()
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, not {spacing!r}")
        return ts.flip(0)

    # ---- the reverse steps: every one a sampler takes, in one notation -------------------------
    #
    # Each has one timestep t for the whole batch and goes to t_prev < t (t_prev = −1: clean data),
    # with ᾱ = alpha_bar_at(t) and ᾱ_prev = alpha_bar_at(t_prev) as Python floats; each returns
    # the mean and the standard deviation of p(x_{t_prev} | x_t), and the loop adds σ·z.

    def q_posterior(self, x0, x_t, t: int, t_prev: int) -> tuple[torch.Tensor, float]:
        """Mean and variance of the posterior q(x_{t_prev} | x_t, x_0) of the chain respaced to the
        visited timesteps (Nichol & Dhariwal 2021, §4):
            β'_t = 1 − ᾱ_t/ᾱ_{t_prev},  α'_t = 1 − β'_t
            μ̃ = β'_t√ᾱ_{t_prev}/(1 − ᾱ_t)·x_0 + (1 − ᾱ_{t_prev})√α'_t/(1 − ᾱ_t)·x_t     (Ho et al. Eq. 7)
            β̃' = β'_t(1 − ᾱ_{t_prev})/(1 − ᾱ_t)                                        (Ho et al. Eq. 7)
        With every step visited (t_prev = t − 1) β' = β_t and these are Ho et al.'s μ̃_t and β̃_t."""
        ab, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        beta = 1 - ab / ab_prev
        mean = (beta * ab_prev**0.5 / (1 - ab)) * x0 + ((1 - ab_prev) * (1 - beta) ** 0.5 / (1 - ab)) * x_t
        return mean, beta * (1 - ab_prev) / (1 - ab)

    def ddpm_step(self, x_t, x0_pred, t: int, t_prev: int, variance: str = "small") -> tuple[torch.Tensor, float]:
        """Ancestral DDPM: p(x_{t_prev} | x_t) = q(x_{t_prev} | x_t, x̂_0), the posterior with the
        network's x̂_0 in place of x_0; σ² = β̃' ("small") or β' = 1 − ᾱ_t/ᾱ_{t_prev} ("large")
        (Ho et al. §3.2: both give similar samples). `ddpm_step_eps` is the same step in the
        paper's ε-form."""
        mean, var = self.q_posterior(x0_pred, x_t, t, t_prev)
        if variance != "small":
            var = 1 - self.alpha_bar_at(t) / self.alpha_bar_at(t_prev)
        return mean, var**0.5

    def ddpm_step_eps(self, x_t, eps_pred, t: int, t_prev: int) -> tuple[torch.Tensor, float]:
        """The textbook DDPM step, in ε (Ho et al. Algorithm 2, line 4), respaced as above:
            x_{t_prev} = 1/√α'_t·(x_t − β'_t/√(1 − ᾱ_t)·ε̂) + σ·z,   σ² = β̃'
        It equals `ddpm_step` with x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t (tests/test_diffusion_identities.py);
        the sampler uses the x̂_0 form, since thresholding and guidance act on x̂_0."""
        ab, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        beta = 1 - ab / ab_prev
        mean = (x_t - beta / (1 - ab) ** 0.5 * eps_pred) / (1 - beta) ** 0.5
        return mean, (beta * (1 - ab_prev) / (1 - ab)) ** 0.5

    def ddim_step(self, x0_pred, eps_pred, t: int, t_prev: int, eta: float = 0.0) -> tuple[torch.Tensor, float]:
        """Mean and standard deviation of the DDIM step from t to t_prev     (Song et al. Eq. 12):
            σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)                (Song et al. Eq. 16)
            x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z
        η = 0 is deterministic; η = 1 on consecutive steps is DDPM's posterior (σ² = β̃_t)."""
        ab, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        mean = ab_prev**0.5 * x0_pred + max(0.0, 1 - ab_prev - var) ** 0.5 * eps_pred
        return mean, var**0.5

    def consistency_step(self, x0_pred, t: int, t_prev: int) -> tuple[torch.Tensor, float]:
        """Multistep consistency sampling (Song et al. 2023, Algorithm 1): x̂_0 noised afresh to
        t_prev, x_prev ~ q(x_prev | x̂_0) = N(√ᾱ_prev·x̂_0, (1 − ᾱ_prev)·I)."""
        ab_prev = self.alpha_bar_at(t_prev)
        return ab_prev**0.5 * x0_pred, (1 - ab_prev) ** 0.5

    # ---- the same DDIM step (η = 0) where another caller needs it in another shape ----------------

    def ddim_step_to(self, x_t, x0_pred, t: torch.Tensor, t_prev: torch.Tensor) -> torch.Tensor:
        """The deterministic DDIM step with a timestep per image (t, t_prev tensors (B,), −1 for
        clean), as distillation takes it inside a training batch: `ddim_step` with η = 0 and
        ε̂ = (x_t − α_t·x̂_0)/σ_t, where α = √ᾱ and σ = √(1 − ᾱ):
            x_prev = α_prev·x̂_0 + σ_prev·(x_t − α_t·x̂_0)/σ_t                  (Song et al. Eq. 12)"""
        a_t, s_t = self.alpha_sigma(t, x_t)
        a_prev, s_prev = self.alpha_sigma(t_prev, x_t)
        return a_prev * x0_pred + s_prev * (x_t - a_t * x0_pred) / s_t

    def ddim_step_up(self, x_s, eps_pred, s: int, t: int) -> torch.Tensor:
        """The deterministic DDIM step solved for its start: the x_t (t > s) from which
        `ddim_step(·, ε̂, t, s)` lands on x_s, given the ε̂ of that step (inversion, Song et al. §4.3).
        The step is x_s = √(ᾱ_s/ᾱ_t)·x_t + c·ε̂ with c = √(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1−ᾱ_t), so
            x_t = √(ᾱ_t/ᾱ_s)·(x_s − c·ε̂)"""
        ab_t, ab_s = self.alpha_bar_at(t), self.alpha_bar_at(s)
        c = (1 - ab_s) ** 0.5 - (ab_s / ab_t) ** 0.5 * (1 - ab_t) ** 0.5
        return (ab_t / ab_s) ** 0.5 * (x_s - c * eps_pred)

    def q_jump(self, x_t, t: int, t_up: int, noise: torch.Tensor) -> torch.Tensor:
        """The forward process from one noise level to a higher one, t_up > t (RePaint's jump back
        up the chain): q(x_{t_up} | x_t) = N(√(ᾱ_{t_up}/ᾱ_t)·x_t, (1 − ᾱ_{t_up}/ᾱ_t)·I)."""
        ratio = self.alpha_bar_at(t_up) / self.alpha_bar_at(t)
        return ratio**0.5 * x_t + (1 - ratio) ** 0.5 * noise
