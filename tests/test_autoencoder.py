"""The VAE's pieces: the KL term against a Monte-Carlo estimate, the reparameterisation's
gradient, the shapes of each preset."""

import pytest
import torch

from minigen.models.autoencoder import PRESETS, Autoencoder, kl_to_standard_normal, preset, vae_loss


def test_kl_matches_a_monte_carlo_estimate():
    """KL(q ‖ p) = E_q[log q(z) − log p(z)], estimated from 400,000 draws of z ~ N(μ, σ²), against
    the closed form, for a few (μ, σ)."""
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.0, 1.5, -0.7, 0.3], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.8, -3.0], dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 4, generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    monte_carlo = (log_q - log_p).mean(0)
    closed = kl_to_standard_normal(mu, logvar)
    assert closed[0].item() == 0.0
    assert torch.allclose(monte_carlo, closed, atol=0.01), (monte_carlo, closed)


def test_the_reparameterisation_carries_the_gradient_to_mu_and_sigma():
    """z = μ + σ·ε: ∂z/∂μ = 1 and ∂z/∂(log σ²) = ½·σ·ε, for the ε that was drawn."""
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    logvar = torch.tensor([0.2, -0.4], requires_grad=True)
    g = torch.Generator().manual_seed(1)
    z = Autoencoder.sample(mu, logvar, generator=g)
    eps = torch.randn(2, generator=torch.Generator().manual_seed(1))
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones(2))
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


@pytest.mark.parametrize("name", list(PRESETS))
def test_encoder_and_decoder_shapes(name):
    config = preset(name)
    model = Autoencoder(config)
    C, (H, W), f = config.image_channels, config.image_size, config.factor
    x = torch.randn(2, C, H, W)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, *config.latent_shape) == (2, config.latent_channels, H // f, W // f)
    assert model.decode(mu).shape == x.shape
    loss, rec, kl = vae_loss(model, x, beta=1e-3)
    loss.backward()
    assert loss.item() == pytest.approx(rec.item() + 1e-3 * kl.item())
    assert all(p.grad is not None for p in model.parameters())


def test_a_size_the_factor_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        Autoencoder(preset("f4", image_size=(30, 30)))


def test_train_vae_resumes_bit_exactly_and_loads_as_a_pipeline(tmp_path):
    import train_vae
    from minigen import pipelines
    from minigen.training.checkpoint import load_checkpoint
    args = ["--preset", "tiny", "--steps", "4", "--batch-size", "8", "--max-images", "64", "--sample-every", "0"]
    assert train_vae.run(train_vae.main, args + ["--out", str(tmp_path / "whole")]) == 0
    assert train_vae.run(train_vae.main, args + ["--out", str(tmp_path / "split"), "--stop-after", "2"]) == 0
    assert train_vae.run(train_vae.main, args + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / run / "last.pt", kind="vae") for run in ("whole", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    pipe = pipelines.load(tmp_path / "whole" / "last.pt")
    assert pipe.kind == "vae" and pipe.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
