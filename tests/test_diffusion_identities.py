"""Identities of the forward process, its posterior, the parameterisations and the samplers' steps."""

import pytest
import torch

from minigen.diffusion import ClassifierFreeGuidance, Denoiser, Diffusion, Frames, SamplerConfig
from minigen.diffusion.guidance import threshold
from minigen.diffusion.schedules import make_betas

SCHEDULES = ["linear", "cosine", "sigmoid"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_composing_one_step_transitions_t_times_gives_q_xt_given_x0(name):
    """x_t = √α_t·x_{t−1} + √β_t·ε composed from x_0: mean m_t = √α_t·m_{t−1}, variance
    v_t = α_t·v_{t−1} + β_t, starting at (1, 0), must give (√ᾱ_t, 1 − ᾱ_t) at every t."""
    d = Diffusion(make_betas(name, 1000))
    m, v = 1.0, 0.0
    means, variances = [], []
    for beta in d.betas.tolist():
        m, v = (1 - beta) ** 0.5 * m, (1 - beta) * v + beta
        means.append(m)
        variances.append(v)
    assert torch.allclose(torch.tensor(means, dtype=torch.float64), d.sqrt_alpha_bar, rtol=1e-9, atol=0)
    assert torch.allclose(torch.tensor(variances, dtype=torch.float64), 1 - d.alpha_bar, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_from_bayes_rule_equals_mu_tilde_and_beta_tilde(name):
    """q(x_{t−1}|x_t, x_0) ∝ N(x_t; √α_t·x_{t−1}, β_t)·N(x_{t−1}; √ᾱ_{t−1}·x_0, 1 − ᾱ_{t−1}).
    Multiplying the two Gaussians in x_{t−1}: precision = α_t/β_t + 1/(1 − ᾱ_{t−1}),
    mean = (√α_t·x_t/β_t + √ᾱ_{t−1}·x_0/(1 − ᾱ_{t−1})) / precision."""
    d = Diffusion(make_betas(name, 1000))
    g = torch.Generator().manual_seed(0)
    for t in range(1, 1000, 37):
        x0 = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
        x_t = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
        mean, var = d.q_posterior(x0, x_t, t, t - 1)
        a, b = 1 - d.betas[t].item(), d.betas[t].item()
        ab_prev = torch.cumprod(1 - d.betas, 0)[t - 1].item()
        precision = a / b + 1 / (1 - ab_prev)
        expected_mean = (a**0.5 * x_t / b + ab_prev**0.5 * x0 / (1 - ab_prev)) / precision
        assert torch.allclose(mean, expected_mean, rtol=1e-9, atol=1e-12)
        assert var == pytest.approx(1 / precision, rel=1e-9)
    # At t = 0 the posterior is a point mass on x_0.
    mean0, var0 = d.q_posterior(x0, x_t, 0, -1)
    assert torch.allclose(mean0, x0) and var0 == 0


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddpm_step_in_the_papers_eps_form_equals_the_posterior_form(name):
    """Ho et al. Algorithm 2: x_{t−1} = 1/√α_t·(x_t − β_t/√(1 − ᾱ_t)·ε̂) + σ_t·z, the same step as
    the posterior q(x_{t−1} | x_t, x̂_0) with x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t (Eq. 15 into Eq. 7),
    on consecutive steps and on a respaced chain (t -> t − 50)."""
    d = Diffusion(make_betas(name, 1000))
    g = torch.Generator().manual_seed(5)
    for t, t_prev in ((1, 0), (10, 9), (500, 499), (999, 998), (600, 550), (999, 949)):
        x_t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        ab = torch.cumprod(1 - d.betas, 0)[t].item()
        x0_hat = (x_t - (1 - ab) ** 0.5 * eps) / ab**0.5
        mean, std = d.ddpm_step(x_t, x0_hat, t, t_prev)
        mean_eps, std_eps = d.ddpm_step_eps(x_t, eps, t, t_prev)
        assert torch.allclose(mean_eps, mean, rtol=1e-9, atol=1e-9)
        assert std_eps == pytest.approx(std, rel=1e-12)
        if t_prev == t - 1:                                  # the paper's own coefficients, from β_t
            beta = d.betas[t].item()
            paper = (x_t - beta / (1 - ab) ** 0.5 * eps) / (1 - beta) ** 0.5
            assert torch.allclose(mean_eps, paper, rtol=1e-9, atol=1e-9)


def test_ddim_step_up_inverts_the_ddim_step_for_a_fixed_eps():
    """x_t -> ddim_step(x̂_0(x_t, ε̂), ε̂, t, s) -> ddim_step_up(·, ε̂, s, t) returns x_t: the inversion's
    climb is the DDIM step solved for its start (Song et al. Eq. 12 with η = 0)."""
    d = Diffusion(make_betas("cosine", 1000))
    g = torch.Generator().manual_seed(6)
    x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    for t, s in ((700, 650), (300, 100), (50, -1)):
        ab = torch.cumprod(1 - d.betas, 0)[t].item()
        x_s, _ = d.ddim_step((x_t - (1 - ab) ** 0.5 * eps) / ab**0.5, eps, t, s)
        if s >= 0:
            assert torch.allclose(d.ddim_step_up(x_s, eps, s, t), x_t, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_eps_x0_v_conversions_are_inverses(prediction):
    """From x_t = √ᾱ·x_0 + √(1−ᾱ)·ε and v = √ᾱ·ε − √(1−ᾱ)·x_0, every conversion recovers
    the value it was built from."""
    d = Diffusion(make_betas("cosine", 1000), prediction=prediction)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 10, 300, 700, 998])
    x0 = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    ab = torch.cumprod(1 - d.betas, 0)[t].view(-1, 1, 1, 1)
    x_t = d.q_sample(x0, t, eps)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    v = d.v_from(x0, t, eps)
    assert torch.allclose(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    assert torch.allclose(d.x0_from_eps(x_t, t, eps), x0, atol=1e-9)
    assert torch.allclose(d.eps_from_x0(x_t, t, x0), eps, atol=1e-9)
    assert torch.allclose(d.x0_from_v(x_t, t, v), x0, atol=1e-12)
    assert torch.allclose(d.eps_from_v(x_t, t, v), eps, atol=1e-12)
    out = {"eps": eps, "x0": x0, "v": v}[prediction]
    x0_hat, eps_hat = d.x0_eps_from_output(out, x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, eps, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddim_eta1_on_consecutive_steps_is_the_ddpm_posterior(name):
    """Song et al. §4.1: with η = 1 and t_prev = t − 1, σ_t² = β̃_t and the mean is μ̃_t(x_t, x̂_0)."""
    d = Diffusion(make_betas(name, 1000))
    g = torch.Generator().manual_seed(2)
    for t in (1, 50, 500, 998):
        x0 = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
        x_t = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
        bt = torch.full((2,), t)
        mean, std = d.ddim_step(x0, d.eps_from_x0(x_t, bt, x0), t, t - 1, eta=1.0)
        post_mean, post_var = d.q_posterior(x0, x_t, t, t - 1)
        ab, ab_prev = torch.cumprod(1 - d.betas, 0)[t].item(), torch.cumprod(1 - d.betas, 0)[t - 1].item()
        beta_tilde = (1 - ab_prev) / (1 - ab) * d.betas[t].item()                   # Ho et al. Eq. 7
        assert std**2 == pytest.approx(beta_tilde, rel=1e-9) and post_var == pytest.approx(beta_tilde, rel=1e-9)
        assert torch.allclose(mean, post_mean, rtol=1e-9, atol=1e-12)
        # DDPM's respaced step with every step visited is the same posterior.
        ddpm_mean, ddpm_std = d.ddpm_step(x_t, x0, t, t - 1)
        assert torch.allclose(ddpm_mean, post_mean, rtol=1e-9, atol=1e-12)
        assert ddpm_std**2 == pytest.approx(beta_tilde, rel=1e-9)
        _, large_std = d.ddpm_step(x_t, x0, t, t - 1, variance="large")
        assert large_std**2 == pytest.approx(d.betas[t].item(), rel=1e-9)


def test_last_step_lands_on_x0_prediction_without_noise():
    """DDIM with η = 0 (and η = 1) from any t to "t = −1" (ᾱ = 1) returns x̂_0 exactly, σ = 0;
    so does the DDPM step."""
    d = Diffusion(make_betas("linear", 1000))
    x0 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    eps = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    for t in (0, 19, 500):
        for eta in (0.0, 1.0):
            mean, std = d.ddim_step(x0, eps, t, -1, eta)
            assert torch.allclose(mean, x0) and std == 0
        x_t = d.q_sample(x0, torch.full((2,), t), eps)
        mean, std = d.ddpm_step(x_t, x0, t, -1)
        assert torch.allclose(mean, x0) and std == 0


def test_timestep_spacings_for_T1000_and_50_steps():
    d = Diffusion(make_betas("linear", 1000))
    assert d.timesteps(50, "leading").tolist() == list(range(980, -1, -20))
    assert d.timesteps(50, "trailing").tolist() == list(range(999, 18, -20))
    assert d.timesteps(50, "linspace").tolist() == [round(999 * i / 49) for i in range(49, -1, -1)]
    assert d.timesteps(1000, "trailing").tolist() == list(range(999, -1, -1))
    assert d.timesteps(1000, "leading").tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="steps must be between"):
        d.timesteps(0)
    with pytest.raises(ValueError, match="spacing"):
        d.timesteps(10, "random")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_targets_and_min_snr_weights(prediction):
    """A model that outputs zeros has loss mean(target²) per image; min-SNR-γ multiplies it by
    min(SNR, γ)/SNR (ε), min(SNR, γ) (x_0) or min(SNR, γ)/(SNR + 1) (v)."""
    d = Diffusion(make_betas("linear", 1000), prediction=prediction)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 1, 5, 5, generator=g) * 2 - 1
    noise = torch.randn(4, 1, 5, 5, generator=g)
    t = torch.tensor([0, 100, 400, 900])
    ab = torch.cumprod(1 - d.betas, 0)[t].float().view(-1, 1, 1, 1)
    target = {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[prediction]
    zero = lambda x, t: torch.zeros_like(x)
    per_image = target.pow(2).flatten(1).mean(1)
    assert d.loss(zero, x0, t, noise).item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    snr = (ab / (1 - ab)).flatten()
    clipped = snr.clamp(max=5.0)
    weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]
    assert d.loss(zero, x0, t, noise, min_snr_gamma=5.0).item() == pytest.approx((weight * per_image).mean().item(), rel=1e-5)
    # A model that outputs the exact target has zero loss.
    exact = lambda x, tt: target
    assert d.loss(exact, x0, t, noise).item() == pytest.approx(0.0, abs=1e-10)


def test_classifier_free_guidance_mixes_in_one_batched_call():
    """ε̂ = ε̂_uncond + w·(ε̂_cond − ε̂_uncond): with outputs equal to the label, y = 3, null = 10,
    w = 2: 10 + 2·(3 − 10) = −4. A negative label 5 replaces the null: 5 + 2·(3 − 5) = 1.
    The null condition is the network's own (its null_condition method)."""
    calls = []

    def model(x, t, y):
        calls.append(len(x))
        return y.float().view(-1, 1, 1, 1).expand_as(x)
    model.null_condition = lambda y: {"y": torch.full_like(y, 10)}

    x = torch.zeros(3, 1, 2, 2)
    t = torch.zeros(3, dtype=torch.long)
    y = torch.full((3,), 3)
    out = ClassifierFreeGuidance(model, 2.0)(x, t, y=y)
    assert torch.all(out == -4) and calls == [6]
    out = ClassifierFreeGuidance(model, 2.0, negative={"y": torch.full((3,), 5)})(x, t, y=y)
    assert torch.all(out == 1)


def test_dynamic_thresholding_rescales_by_the_percentile():
    """Saharia et al.: s = max(quantile(|x|, p), 1); x ← clamp(x, −s, s)/s. Values already in
    [−1, 1] are untouched (s = 1)."""
    x = torch.linspace(-3, 3, 201).view(1, 1, 1, 201)
    s = torch.quantile(x.abs().flatten(), 0.9).item()
    out = threshold(x, clip=False, dynamic_percentile=0.9)
    assert torch.allclose(out, x.clamp(-s, s) / s)
    assert out.abs().max().item() == pytest.approx(1.0)
    small = torch.linspace(-0.5, 0.5, 11).view(1, 1, 1, 11)
    assert torch.equal(threshold(small, False, 0.995), small)
    assert threshold(x, clip=True, dynamic_percentile=None).abs().max() == 1


def test_forward_strip_fades_the_signal():
    d = Diffusion(make_betas("linear", 1000))
    x0 = torch.ones(1, 8, 8)
    frames, ts = d.forward_strip(x0, frames=6, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (6, 1, 8, 8) and ts[0] == 0 and ts[-1] == 999
    assert (frames[0] - x0).abs().max() < 0.05                  # t = 0: almost the image
    correlation = [(f.flatten() * x0.flatten()).mean().item() for f in frames]
    assert correlation[0] > 0.9 and abs(correlation[-1]) < 0.5


def test_sampler_calls_back_each_step_and_rejects_bad_arguments():
    d = Diffusion(make_betas("linear", 100))
    model = Denoiser(d, lambda x, t: torch.zeros_like(x))
    frames = Frames()
    x = SamplerConfig("ddim", 5).sample(model, torch.randn(2, 1, 4, 4), callback=frames, progress=False)
    assert frames.t == d.timesteps(5).tolist()[1:] + [-1]          # where each frame's x_t is
    assert len(frames.x_t) == len(frames.x0) == 5 and frames.x_t[0].shape == (2, 1, 4, 4)
    assert torch.equal(frames.x_t[-1], x)
    with pytest.raises(ValueError, match="sampler"):
        SamplerConfig("euler").step(d)
    with pytest.raises(ValueError, match="eta"):
        SamplerConfig(eta=1.5).step(d)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = SamplerConfig("ddpm", 10).sample(model, torch.zeros(2, 1, 4, 4), generator=g1, progress=False)
    b = SamplerConfig("ddpm", 10).sample(model, torch.zeros(2, 1, 4, 4), generator=g2, progress=False)
    assert torch.equal(a, b)


def test_guidance_in_a_limited_interval_is_the_conditional_model_outside_it():
    """Kynkäänniemi et al. 2024: inside (t_low, t_high) ε̂ = ε̂_u + w(ε̂_c − ε̂_u); outside w = 1, so
    ε̂ = ε̂_c. With outputs equal to the label (cond 3, null 10), w = 2: −4 inside, 3 outside."""
    def model(x, t, y):
        return y.float().view(-1, 1, 1, 1).expand_as(x)
    model.null_condition = lambda y: {"y": torch.full_like(y, 10)}
    guided = ClassifierFreeGuidance(model, 2.0, interval=(100, 500))
    x, y = torch.zeros(4, 1, 2, 2), torch.full((4,), 3)
    out = guided(x, torch.tensor([50, 100, 500, 900]), y=y)
    assert out[:, 0, 0, 0].tolist() == [3.0, -4.0, -4.0, 3.0]


def test_rescaled_guidance_in_closed_form():
    """Lin et al. 2024, Eq. 15-16. With a null output of 0 and a conditional output A, w = 3
    gives 3A, whose std is 3·std(A); rescaled to std(A) it is A again, so φ = 0.7 gives
    0.7·A + 0.3·3A = 1.6·A, φ = 1 gives A, φ = 0 plain guidance 3A. Each image on its own."""
    A = torch.stack([torch.linspace(-1, 2, 8), torch.linspace(0, 5, 8) ** 2]).view(2, 2, 2, 2)  # two images

    def model(x, t, y):                                     # the batch is (conditional, null): A for y = 1, else 0
        return torch.cat([A, A]) * (y == 1).view(-1, 1, 1, 1)
    model.null_condition = lambda y: {"y": torch.zeros_like(y)}
    x, t, y = torch.zeros(2, 2, 2, 2), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    for phi, factor in ((0.0, 3.0), (0.7, 1.6), (1.0, 1.0)):
        out = ClassifierFreeGuidance(model, 3.0, rescale=phi)(x, t, y=y)
        assert torch.allclose(out, factor * A, atol=1e-5), phi


def test_the_sigma_interval_becomes_the_timesteps_whose_noise_level_lies_in_it():
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) rises with t; the pipeline guides exactly where σ_t ∈ (σ_low, σ_high]."""
    from minigen.models.unet import UNet, preset
    from minigen.pipelines import DiffusionPipeline
    d = Diffusion(make_betas("linear", 1000))
    pipe = DiffusionPipeline(UNet(preset("tiny", num_classes=2)), d)
    lo, hi = pipe.denoiser(3.0, sigma_interval=(0.28, 5.42)).network.interval
    sigma = lambda t: ((1 - d.alpha_bar[t]) / d.alpha_bar[t]).sqrt().item()
    assert sigma(lo - 1) <= 0.28 < sigma(lo) and sigma(hi) <= 5.42 < sigma(hi + 1)
