"""The denoiser, and the guidance that wraps it: classifier-free, classifier, loss, thresholding.

Papers:
    Ho & Salimans 2022, Classifier-Free Diffusion Guidance, arXiv:2207.12598
    Dhariwal & Nichol 2021, Diffusion Models Beat GANs on Image Synthesis, arXiv:2105.05233
        (classifier guidance, Algorithm 2)
    Saharia et al. 2022, Imagen, arXiv:2205.11487, §2.3 (dynamic thresholding)
    Kynkäänniemi et al. 2024, Applying Guidance in a Limited Interval Improves Sample and
        Distribution Quality in Diffusion Models, arXiv:2404.07724 (guidance only at middle noise levels)
    Lin et al. 2024, Common Diffusion Noise Schedules and Sample Steps are Flawed,
        arXiv:2305.08891, §3.4 (rescaled classifier-free guidance)

A denoiser is called as `denoiser(x_t, t, **cond)` with one timestep t for the whole batch and
returns `Denoised(x_t, x0, eps)`: its estimates x̂_0 and ε̂ for the point x_t. What the network
is conditioned on (`**cond`: a class label, or a prompt's token ids and padding mask) passes through untouched; only the network
and classifier-free guidance, which asks the network for its null condition, look into it.

    Denoiser(diffusion, network)           the network, whatever it predicts (ε, x_0 or v)
    ClassifierFreeGuidance(network, w)     wraps the *network*: its two passes mix raw outputs
    GuidanceInput(network, w)              a guidance-distilled network: w is an input, one pass
    LossGuidance(denoiser, loss, s)        moves x_t down the gradient of a loss on x̂_0
    ClassifierGuidance(denoiser, clf, s, y)  shifts ε̂ by a noisy classifier's gradient
    Thresholding(denoiser, ...)            keeps x̂_0 in the data range
Wrappers compose in that order: guidance(thresholding(...)) would clip before guiding.
"""

from typing import NamedTuple

import torch

from .process import Diffusion


class Denoised(NamedTuple):
    x_t: torch.Tensor      # the point the estimates are for (loss guidance moves it)
    x0: torch.Tensor       # x̂_0
    eps: torch.Tensor      # ε̂


class Denoiser:
    """The network as a denoiser: (x_t, t, **cond) -> x̂_0 and ε̂, whatever it predicts."""

    def __init__(self, diffusion: Diffusion, network):
        self.diffusion, self.network = diffusion, network

    def __call__(self, x_t: torch.Tensor, t: int, **cond) -> Denoised:
        bt = self.diffusion.batch_t(t, x_t)
        out = self.network(x_t, bt, **cond)
        return Denoised(x_t, *self.diffusion.x0_eps_from_output(out, x_t, bt))


class ClassifierFreeGuidance:
    """A network whose output is guided (Ho & Salimans 2022, Eq. 6):
        ε̂ = ε̂(x_t, ∅) + w·(ε̂(x_t, c) − ε̂(x_t, ∅))
    ∅ is the network's null condition (`network.null_condition(**cond)`), or `negative`, a
    condition to steer away from (a "negative prompt"). Both passes go through the network as
    one batch; each tensor of the condition is concatenated along the batch. Mixing the raw
    outputs equals mixing ε̂: each parameterisation is affine in the output, with weights
    (1 − w) + w = 1.

    With `interval` = (t_low, t_high), guidance applies only at those timesteps and w = 1 (the
    conditional model alone) elsewhere (Kynkäänniemi et al. 2024: guidance at high noise costs
    diversity, at low noise it does little); `sigma_interval_timesteps` turns their σ interval
    into it.

    With `rescale` = φ > 0, the guided output is brought back to the conditional output's
    standard deviation (over each image) and mixed with it (Lin et al. 2024, Eq. 15-16):
        out_r = out · std(out_c)/std(out),   out ← φ·out_r + (1 − φ)·out
    Large w inflates the output's scale, which over-exposes images; φ = 0.7 is their choice.
    Like w, it acts on the raw outputs, whatever the network predicts."""

    def __init__(self, network, scale: float, negative: dict | None = None, interval: tuple[int, int] | None = None,
                 rescale: float = 0.0):
        self.network, self.scale, self.negative, self.interval = network, scale, negative, interval
        self.rescale = rescale

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        uncond = self.negative if self.negative is not None else self.network.null_condition(**cond)
        both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}          # (2B, ...) each
        out = self.network(torch.cat([x_t, x_t]), torch.cat([t, t]), **both)
        cond_out, uncond_out = out.chunk(2)
        w = self.scale
        if self.interval is not None:                                      # on the device: no host read of t
            inside = (t >= self.interval[0]) & (t <= self.interval[1])     # (B,)
            w = torch.where(inside, self.scale, 1.0).to(out.dtype).reshape(-1, *([1] * (out.dim() - 1)))
        guided = uncond_out + w * (cond_out - uncond_out)
        if self.rescale:
            dims = tuple(range(1, out.dim()))                              # each image's (C, H, W)
            rescaled = guided * cond_out.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
            guided = self.rescale * rescaled + (1 - self.rescale) * guided
        return guided


class GuidanceInput:
    """A guidance-distilled network (Meng et al. 2023, §4.1, arXiv:2210.03142) at scale w: it
    learnt the teacher's guided output ε̂(x_t, ∅) + w·(ε̂(x_t, c) − ε̂(x_t, ∅)) with w as an input,
    so one pass gives what ClassifierFreeGuidance needs two for. `scale`: a number, or (B,) per image."""

    def __init__(self, network, scale):
        self.network, self.scale = network, scale

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        w = torch.as_tensor(self.scale, dtype=torch.float32, device=x_t.device).expand(len(x_t))   # (B,)
        return self.network(x_t, t, w=w, **cond)

    def null_condition(self, **cond) -> dict:
        return self.network.null_condition(**cond)


def sigma_interval_timesteps(diffusion: Diffusion, low: float, high: float) -> tuple[int, int]:
    """The timesteps (t_low, t_high) whose noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) lies in (low, high]
    (Kynkäänniemi et al. 2024 give their interval in σ); σ_t rises with t, so they are one run.
    (1, 0), an empty range, when no timestep's σ is inside."""
    sigma = diffusion.sigma.cpu()                                          # (T,)
    inside = ((sigma > low) & (sigma <= high)).nonzero().flatten()
    return (int(inside[0]), int(inside[-1])) if len(inside) else (1, 0)


class LossGuidance:
    """Guidance by a differentiable loss on x̂_0 (e.g. distance to a colour; after Dhariwal &
    Nichol 2021's classifier guidance): before the step,
        x_t ← x_t − s·∇_{x_t} loss(x̂_0(x_t)),
    and the step uses the same network output, re-read at the moved x_t. It wraps the network
    Denoiser itself, since it holds the network's output fixed."""

    def __init__(self, denoiser: Denoiser, loss_fn, scale: float):
        if not isinstance(denoiser, Denoiser):
            raise TypeError("LossGuidance wraps the network's Denoiser (it re-reads the network output)")
        self.denoiser, self.diffusion, self.loss_fn, self.scale = denoiser, denoiser.diffusion, loss_fn, scale

    def __call__(self, x_t: torch.Tensor, t: int, **cond) -> Denoised:
        d, bt = self.diffusion, self.diffusion.batch_t(t, x_t)
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            out = self.denoiser.network(x_in, bt, **cond)
            x0_guess, _ = d.x0_eps_from_output(out, x_in, bt)
            grad = torch.autograd.grad(self.loss_fn(x0_guess), x_in)[0]
        x_t, out = (x_t - self.scale * grad).detach(), out.detach()       # x_t ← x_t − s·∇ loss(x̂_0)
        return Denoised(x_t, *d.x0_eps_from_output(out, x_t, bt))


def classifier_grad(classifier, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_{x_t} log p(y | x_t) for each image, by autograd through the classifier."""
    with torch.enable_grad():
        x_in = x_t.detach().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x_in, t).float(), dim=-1)
        chosen = log_p[torch.arange(len(y), device=log_p.device), y].sum()
        return torch.autograd.grad(chosen, x_in)[0]


class ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2): `classifier(x_t, t)` returns
    class logits for noisy images, and
        ε̂ ← ε̂ − s·√(1 − ᾱ_t)·∇_{x_t} log p(y | x_t)
    pushes each sample towards its label y (so it works for an unconditional model too, and
    combines with classifier-free guidance for a conditional one)."""

    def __init__(self, denoiser, classifier, scale: float, y: torch.Tensor):
        self.denoiser, self.diffusion = denoiser, denoiser.diffusion
        self.classifier, self.scale, self.y = classifier, scale, y

    def __call__(self, x_t: torch.Tensor, t: int, **cond) -> Denoised:
        d = self.denoiser(x_t, t, **cond)
        bt = self.diffusion.batch_t(t, d.x_t)
        grad = classifier_grad(self.classifier, d.x_t, bt, self.y)          # ∇ log p(y | x_t)
        eps = d.eps - self.scale * (1 - self.diffusion.alpha_bar_at(t)) ** 0.5 * grad
        return Denoised(d.x_t, self.diffusion.x0_from_eps(d.x_t, bt, eps), eps)


def threshold(x0: torch.Tensor, clip: bool, dynamic_percentile: float | None) -> torch.Tensor:
    """Keep x̂_0 in the data range. Dynamic thresholding (Saharia et al. 2022, §2.3): per image,
    s = max(quantile(|x̂_0|, p), 1); x̂_0 ← clamp(x̂_0, −s, s)/s. Plain clipping to [−1, 1] otherwise."""
    if dynamic_percentile is not None:
        s = torch.quantile(x0.abs().flatten(1).float(), dynamic_percentile, dim=1).clamp(min=1.0)
        s = s.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))           # (B,) -> (B, 1, 1, 1)
        return torch.maximum(torch.minimum(x0, s), -s) / s
    return x0.clamp(-1, 1) if clip else x0


class Thresholding:
    """x̂_0 kept in the data range, and ε̂ re-derived from it so the two stay consistent:
        ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1 − ᾱ_t)"""

    def __init__(self, denoiser, clip: bool = True, dynamic_percentile: float | None = None):
        self.denoiser, self.diffusion = denoiser, denoiser.diffusion
        self.clip, self.dynamic_percentile = clip, dynamic_percentile

    def __call__(self, x_t: torch.Tensor, t: int, **cond) -> Denoised:
        d = self.denoiser(x_t, t, **cond)
        x0 = threshold(d.x0, self.clip, self.dynamic_percentile)
        return Denoised(d.x_t, x0, self.diffusion.eps_from_x0(d.x_t, self.diffusion.batch_t(t, d.x_t), x0))
