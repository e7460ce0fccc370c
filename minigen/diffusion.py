"""Gaussian diffusion: the forward process, its training loss, and the DDPM and DDIM samplers.

Papers (formulas below cite them by equation):
    Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models, arXiv:2006.11239
    Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, arXiv:2010.02502
    Nichol & Dhariwal 2021, Improved DDPM, arXiv:2102.09672 (respacing, fixed-large variance)
    Salimans & Ho 2022, Progressive Distillation, arXiv:2202.00512 (v-prediction)
    Hang et al. 2023, Min-SNR weighting, arXiv:2303.09556
    Ho & Salimans 2022, Classifier-Free Guidance, arXiv:2207.12598
    Saharia et al. 2022, Imagen, arXiv:2205.11487 (dynamic thresholding)
    Lin et al. 2024, Common Diffusion Noise Schedules and Sample Steps are Flawed,
        arXiv:2305.08891 (the "trailing" timestep spacing)

The samplers take any callable `model(x_t, t)` (or `model(x_t, t, y)` with class labels) that
returns the network output in the chosen parameterisation ("eps", "x0" or "v"): nothing
here knows about network architecture, so the tests drive the samplers with analytic models.

Indices are 0-based: t = 0..T−1, and "t = −1" stands for the clean data, where ᾱ = 1.

Left out: learned variances (Nichol & Dhariwal's hybrid loss), continuous time, and
higher-order solvers (DPM-Solver, Heun); DDIM with η = 0 is the deterministic sampler here.
"""

import torch

from .runtime import progress_bar

PREDICTIONS = ("eps", "x0", "v")
SPACINGS = ("leading", "trailing", "linspace")


class Diffusion:
    """The schedule tables, the forward process q, the loss, and the samplers.

    All tables are float64 tensors of shape (T,), kept on the CPU; `_at` gathers the entries
    for a batch of timesteps and casts them to the dtype and device of the images. A sampler
    step has one t for the whole batch, so its coefficients are Python floats (float64).
    """

    def __init__(self, betas: torch.Tensor, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
        betas = betas.to(torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor of values in (0, 1)")
        self.prediction = prediction
        self.T = len(betas)
        self.betas = betas                                                   # β_t
        self.alphas = 1 - betas                                              # α_t = 1 − β_t
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)                   # ᾱ_t = Π_{s≤t} α_s
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])  # ᾱ_{t−1}, ᾱ_{−1} = 1
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1 - self.alpha_bar).sqrt()
        # Posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I)                          (Ho et al. Eqs. 6-7)
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)   # β̃_t
        # β̃_0 = 0, so its log is clipped to log β̃_1 (as in Ho et al.'s code).
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)             # of x_0
        self.posterior_mean_coef2 = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)  # of x_t
        self.snr = self.alpha_bar / (1 - self.alpha_bar)                     # SNR(t) = ᾱ_t / (1 − ᾱ_t)

    # ---- helpers -------------------------------------------------------------------------

    def _at(self, table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """table[t] for a batch of timesteps t (B,), gathered in float64 on the CPU, then cast to
        x's dtype and device and shaped (B, 1, 1, ...) to broadcast against x."""
        return table[t.cpu()].to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def alpha_bar_at(self, t: int) -> float:
        """ᾱ_t for one timestep, with ᾱ_{−1} = 1 (clean data), as a Python float (float64)."""
        return 1.0 if t < 0 else self.alpha_bar[t].item()

    def _batch_t(self, t: int, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)

    # ---- forward process -------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(√ᾱ_t·x_0, (1 − ᾱ_t)·I):
        x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε                                       (Ho et al. Eq. 4)"""
        noise = torch.randn_like(x0) if noise is None else noise
        return self._at(self.sqrt_alpha_bar, t, x0) * x0 + self._at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t−1} | x_t, x_0):
        μ̃_t = β_t√ᾱ_{t−1}/(1 − ᾱ_t)·x_0 + (1 − ᾱ_{t−1})√α_t/(1 − ᾱ_t)·x_t,  β̃_t  (Ho et al. Eq. 7)"""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x0 + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t)

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

    def v_from(self, x0, eps, t):
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
        target = {"eps": noise, "x0": x0, "v": self.v_from(x0, noise, t)}[self.prediction]
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

    def model_output(self, model, x_t, t, y=None, guidance: float = 1.0, null_label: int | None = None,
                     negative_y=None) -> torch.Tensor:
        """The network output, with classifier-free guidance when labels and w ≠ 1 are given:
            ε̂ = ε̂_uncond + w·(ε̂_cond − ε̂_uncond)                             (Ho & Salimans 2022, Eq. 6)
        Both passes go through the network as one batch. With `negative_y`, the negative label's
        prediction takes the place of the unconditional one (a "negative prompt"). Mixing the
        raw outputs equals mixing ε̂: each parameterisation is affine in the output, with
        weights (1 − w) + w = 1."""
        if y is None:
            return model(x_t, t)
        if guidance == 1.0 and negative_y is None:
            return model(x_t, t, y)
        if negative_y is None:
            if null_label is None:
                raise ValueError("classifier-free guidance needs null_label (the model's 'no class' label)")
            negative_y = torch.full_like(y, null_label)
        out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, negative_y]))
        cond, uncond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    @staticmethod
    def classifier_grad(classifier, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇_{x_t} log p(y | x_t) for each image, by autograd through the classifier."""
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            log_p = torch.log_softmax(classifier(x_in, t).float(), dim=-1)
            chosen = log_p[torch.arange(len(y), device=log_p.device), y].sum()
            return torch.autograd.grad(chosen, x_in)[0]

    @staticmethod
    def threshold(x0: torch.Tensor, clip_x0: bool, dynamic_percentile: float | None) -> torch.Tensor:
        """Keep x̂_0 in the data range. Dynamic thresholding (Saharia et al. 2022, §2.3): per image,
        s = max(quantile(|x̂_0|, p), 1); x̂_0 ← clamp(x̂_0, −s, s)/s. Plain clipping otherwise."""
        if dynamic_percentile is not None:
            s = torch.quantile(x0.abs().flatten(1).float(), dynamic_percentile, dim=1).clamp(min=1.0)
            s = s.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
            return torch.maximum(torch.minimum(x0, s), -s) / s
        return x0.clamp(-1, 1) if clip_x0 else x0

    def ddpm_step(self, x_t, x0_pred, t: int, t_prev: int, variance: str = "small") -> tuple[torch.Tensor, float]:
        """Mean and standard deviation of p(x_{t_prev} | x_t), the posterior q(x_{t_prev} | x_t, x̂_0)
        of the chain respaced to the visited timesteps (Nichol & Dhariwal 2021, §4):
            β'_t = 1 − ᾱ_t/ᾱ_{t_prev},  α'_t = 1 − β'_t
            μ = β'_t√ᾱ_{t_prev}/(1 − ᾱ_t)·x̂_0 + (1 − ᾱ_{t_prev})√α'_t/(1 − ᾱ_t)·x_t   (Ho et al. Eq. 7)
            σ² = β̃'_t = β'_t(1 − ᾱ_{t_prev})/(1 − ᾱ_t)  ("small")  or  β'_t  ("large")  (Ho et al. §3.2)
        With every step visited (t_prev = t − 1) these are exactly μ̃_t and β̃_t."""
        ab, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        beta = 1 - ab / ab_prev
        mean = (beta * ab_prev**0.5 / (1 - ab)) * x0_pred + ((1 - ab_prev) * (1 - beta) ** 0.5 / (1 - ab)) * x_t
        var = beta * (1 - ab_prev) / (1 - ab) if variance == "small" else beta
        return mean, var**0.5

    def ddim_step(self, x0_pred, eps_pred, t: int, t_prev: int, eta: float = 0.0) -> tuple[torch.Tensor, float]:
        """Mean and standard deviation of the DDIM step from t to t_prev     (Song et al. Eq. 12):
            σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)                (Song et al. Eq. 16)
            x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z
        η = 0 is deterministic; η = 1 on consecutive steps is DDPM's posterior (σ² = β̃_t)."""
        ab, ab_prev = self.alpha_bar_at(t), self.alpha_bar_at(t_prev)
        var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        mean = ab_prev**0.5 * x0_pred + max(0.0, 1 - ab_prev - var) ** 0.5 * eps_pred
        return mean, var**0.5

    @torch.no_grad()
    def sample(self, model, shape, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
               spacing: str = "trailing", x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
               clip_x0: bool = True, dynamic_threshold: float | None = None, variance: str = "small",
               y: torch.Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
               negative_y: torch.Tensor | None = None, device=None, return_intermediates: bool = False,
               progress: bool = True, timesteps: list[int] | None = None, loss_fn=None, loss_scale: float = 0.0,
               classifier=None, classifier_scale: float = 0.0, classifier_y: torch.Tensor | None = None):
        """Draw samples x_0 of `shape` (B, C, H, W) by running the reverse process from x_T ~ N(0, I).

        sampler "ddpm": ancestral sampling (Ho et al. Algorithm 2) on the visited timesteps;
                variance "small" (β̃, default) or "large" (β); no noise is added at the last step.
        sampler "ddim": Song et al. Eq. 12 with η ∈ [0, 1].
        steps: number of network evaluations (default T); `spacing` picks which timesteps.
        The step after the last listed timestep always lands on clean data (ᾱ = 1).
        y, guidance, null_label, negative_y: class labels and classifier-free guidance.
        return_intermediates: also return {"t": [...], "x_t": (S, B, ...), "x0_pred": (S, B, ...)}
                with x_t after each step and the x̂_0 predicted at it.
        timesteps: an explicit descending list to visit instead of `steps` and `spacing`
                (SDEdit starts part-way down the chain).
        loss_fn, loss_scale: guidance by a differentiable loss on x̂_0 (the seeds' colour
                guidance): before each step x_t ← x_t − scale·∇_{x_t} loss(x̂_0(x_t)), and the step
                then uses the same network output.
        classifier, classifier_scale: classifier guidance (Dhariwal & Nichol 2021, Algorithm 2):
                `classifier(x_t, t)` returns class logits for noisy images, and
                    ε̂ ← ε̂ − s·√(1 − ᾱ_t)·∇_{x_t} log p(y | x_t)
                pushes each sample towards its label: classifier_y, else y (so it works for an
                unconditional model too, and combines with CFG for a conditional one).
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', not {sampler!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], not {eta}")
        device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
        x = torch.randn(shape, generator=generator, device=device) if x_T is None else x_T.to(device)
        ts = list(timesteps) if timesteps is not None else self.timesteps(steps or self.T, spacing).tolist()
        record = {"t": [], "x_t": [], "x0_pred": []}
        for i, t in enumerate(progress_bar(ts, desc=f"{sampler} {len(ts)} steps", disable=not progress, leave=False)):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            bt = self._batch_t(t, x)
            if loss_fn is not None and loss_scale:
                with torch.enable_grad():
                    x_in = x.detach().requires_grad_(True)
                    out = self.model_output(model, x_in, bt, y, guidance, null_label, negative_y)
                    x0_guess, _ = self.x0_eps_from_output(out, x_in, bt)
                    grad = torch.autograd.grad(loss_fn(x0_guess), x_in)[0]
                x, out = (x - loss_scale * grad).detach(), out.detach()     # x_t ← x_t − s·∇ loss(x̂_0)
            else:
                out = self.model_output(model, x, bt, y, guidance, null_label, negative_y)
            x0_pred, eps_pred = self.x0_eps_from_output(out, x, bt)
            if classifier is not None and classifier_scale:
                target = classifier_y if classifier_y is not None else y
                grad = self.classifier_grad(classifier, x, bt, target)      # ∇ log p(y | x_t)
                eps_pred = eps_pred - classifier_scale * (1 - self.alpha_bar_at(t)) ** 0.5 * grad
                x0_pred = self.x0_from_eps(x, bt, eps_pred)
            if clip_x0 or dynamic_threshold is not None:
                x0_pred = self.threshold(x0_pred, clip_x0, dynamic_threshold)
                eps_pred = self.eps_from_x0(x, bt, x0_pred)               # keep ε̂ consistent with the kept x̂_0
            if sampler == "ddpm":
                mean, std = self.ddpm_step(x, x0_pred, t, t_prev, variance)
            else:
                mean, std = self.ddim_step(x0_pred, eps_pred, t, t_prev, eta)
            if t_prev >= 0:                                                  # no noise on the last step
                x = mean + std * torch.randn(x.shape, generator=generator, device=device)
            else:
                x = mean
            if return_intermediates:
                record["t"].append(t)
                record["x_t"].append(x.cpu())
                record["x0_pred"].append(x0_pred.cpu())
        if return_intermediates:
            return x, {"t": record["t"], "x_t": torch.stack(record["x_t"]), "x0_pred": torch.stack(record["x0_pred"])}
        return x

    @torch.no_grad()
    def ddim_invert(self, model, x0: torch.Tensor, steps: int | None = None, spacing: str = "trailing",
                    y=None, guidance: float = 1.0, null_label: int | None = None, refine: int = 0,
                    progress: bool = True) -> torch.Tensor:
        """Run deterministic DDIM (η = 0) backwards, x_0 -> x_T, over the same timesteps `sample` visits.

        Each DDIM step s <- t is x_s = √(ᾱ_s/ᾱ_t)·x_t + (√(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1−ᾱ_t))·ε̂(x_t, t),
        so, solved for x_t:
            x_t = √(ᾱ_t/ᾱ_s)·(x_s − (√(1−ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1−ᾱ_t))·ε̂(x_t, t))
        ε̂(x_t, t) needs the unknown x_t; the usual inversion (Song et al. §4.3, Dhariwal & Nichol
        2021 App. F) evaluates it at x_s instead. `refine` extra fixed-point iterations re-evaluate
        ε̂ at the current estimate of x_t, which makes the inversion exact where they converge.
        Sampling with η = 0 from the result returns x_0 (no clipping: use clip_x0=False)."""
        ts = self.timesteps(steps or self.T, spacing).flip(0).tolist()    # ascending
        x = x0
        levels = [-1] + ts
        for s, t in progress_bar(list(zip(levels[:-1], levels[1:])), desc="ddim inversion", disable=not progress, leave=False):
            bt = self._batch_t(t, x)
            ab_t, ab_s = self.alpha_bar_at(t), self.alpha_bar_at(s)
            c = (1 - ab_s) ** 0.5 - (ab_s / ab_t) ** 0.5 * (1 - ab_t) ** 0.5
            x_t = x
            for _ in range(1 + refine):
                out = self.model_output(model, x_t, bt, y, guidance, null_label)
                _, eps = self.x0_eps_from_output(out, x_t, bt)
                x_t = (ab_t / ab_s) ** 0.5 * (x - c * eps)
            x = x_t
        return x
