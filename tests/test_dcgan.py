"""DCGAN: shapes for every size, Radford et al.'s initialisation, the training targets and phases,
DiffAugment, slerp, and train_gan.py / sample.py end to end on the tiny preset."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigen.interpolation import slerp
from minigen.models.dcgan import SIZES, Discriminator, Generator, preset
from minigen.training.diffaug import cutout, diff_augment, translation


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(size, channels):
    cfg = preset("tiny", image_size=(size, size), image_channels=channels, num_classes=3)
    G, D = Generator(cfg), Discriminator(cfg)
    y = torch.tensor([0, 2])
    x = G(torch.randn(2, cfg.z_dim), y)
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert D(x, y).shape == (2,)


def test_unsupported_size_is_refused():
    with pytest.raises(ValueError, match="square images of"):
        Generator(preset("tiny", image_size=(48, 48)))
    with pytest.raises(ValueError, match="not 32x64"):
        Generator(preset("tiny", image_size=(32, 64)))


def test_initialisation_statistics_follow_radford_et_al():
    """Conv weights ~ N(0, 0.02); BatchNorm γ ~ N(1, 0.02), β = 0; D's first layer has no BatchNorm."""
    torch.manual_seed(0)
    cfg = preset("dcgan")
    G, D = Generator(cfg), Discriminator(cfg)
    weights = torch.cat([m.weight.flatten() for m in [*G.modules(), *D.modules()]
                         if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.02)
    gammas = torch.cat([m.weight for m in [*G.modules(), *D.modules()] if isinstance(m, torch.nn.BatchNorm2d)])
    betas = torch.cat([m.bias for m in [*G.modules(), *D.modules()] if isinstance(m, torch.nn.BatchNorm2d)])
    assert gammas.mean().item() == pytest.approx(1.0, abs=3e-3) and gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(betas == 0)
    assert isinstance(D.features[0], torch.nn.Conv2d) and isinstance(D.features[1], torch.nn.LeakyReLU)
    assert D.features[1].negative_slope == 0.2
    assert isinstance(G.net[-1], torch.nn.Tanh) and isinstance(G.net[-2], torch.nn.ConvTranspose2d)


def test_projection_discriminator_adds_the_inner_product_term():
    """D(x, y) = ψ(φ(x)) + ⟨embed(y), Σ φ(x)⟩ (Miyato & Koyama 2018, Eq. 3)."""
    cfg = preset("tiny", num_classes=4)
    D = Discriminator(cfg).eval()
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 3])
    h = D.features(x)
    expected = D.logit(h).flatten() + (D.label_emb.weight[y] * h.sum(dim=(2, 3))).sum(1)
    assert torch.allclose(D(x, y), expected, atol=1e-5)


def test_label_smoothing_and_flipping_targets():
    """BCE with logits against 0.9 is minimised at D(x) = 0.9 (logit ln 9), not at 1."""
    logits = torch.linspace(-5, 5, 10001, requires_grad=False)
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.9), reduction="none")
    assert logits[loss.argmin()].item() == pytest.approx(math.log(9), abs=2e-3)


def test_each_phase_steps_only_its_own_network(tmp_path, monkeypatch):
    """In train_gan's loop, D's optimizer step changes only D's parameters and G's only G's:
    every other parameter stays bit-identical through each step, and each step does move its own."""
    import train_gan
    optimizers, moved = [], []
    real_init, real_step = torch.optim.Adam.__init__, torch.optim.Adam.step

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        optimizers.append(self)

    def step(self, *args, **kwargs):
        params = lambda opt: [p for group in opt.param_groups for p in group["params"]]
        others = [p for opt in optimizers if opt is not self for p in params(opt)]
        before_others = [p.detach().clone() for p in others]
        before_mine = [p.detach().clone() for p in params(self)]
        result = real_step(self, *args, **kwargs)
        assert all(torch.equal(b, p) for b, p in zip(before_others, others))
        moved.append(any(not torch.equal(b, p) for b, p in zip(before_mine, params(self))))
        return result

    monkeypatch.setattr(torch.optim.Adam, "__init__", init)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    code = train_gan.main(["--preset", "tiny", "--steps", "3", "--batch-size", "8", "--sample-every", "0",
                           "--out", str(tmp_path / "run")])
    assert code == 0 and len(optimizers) == 2
    assert len(moved) == 6 and all(moved)                     # 3 steps × (D phase, G phase)


def test_diffaugment_translation_and_cutout_by_construction():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    shifted = translation(x, ratio=0.25)                      # shifts of −1, 0 or +1 pixel, zero-filled
    for img in shifted[:, 0]:
        nonzero_rows = [r for r in range(4) if img[r].abs().sum() > 0]
        assert len(nonzero_rows) >= 3
    assert any(torch.equal(img, x[0]) for img in shifted)
    masked = cutout(torch.ones(500, 1, 8, 8))
    holes = (masked == 0).sum(dim=(1, 2, 3))
    assert holes.max() == 16 and holes.min() >= 4           # a 4x4 square, sometimes over an edge
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate")
    grad = torch.ones(2, 3, 8, 8, requires_grad=True)
    diff_augment(grad, "color,translation,cutout").sum().backward()
    assert grad.grad is not None                                # gradients reach G through the augmentation


def test_slerp_keeps_the_norm_and_hits_both_ends():
    """Between orthogonal unit vectors, slerp at s is (cos(sπ/2), sin(sπ/2)): norm 1 throughout."""
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(a, b, torch.tensor([0.0, 1 / 3, 0.5, 1.0]))
    assert torch.allclose(path[2], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    assert torch.allclose(path[1], torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    z0, z1 = torch.randn(2, 3, 4, 4)
    walk = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert walk.shape == (5, 3, 4, 4) and torch.allclose(walk[0], z0, atol=1e-6)


def test_train_gan_end_to_end_and_sampling(tmp_path, capsys):
    """Train a few steps, then sample.py on the GAN (in this process; resuming bit for bit, D
    included, is test_lifecycle's)."""
    import sample
    import train_gan
    common = ["--preset", "tiny", "--batch-size", "16", "--steps", "6", "--sample-every", "3", "--log-every", "2"]
    assert train_gan.run(train_gan.main, [*common, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "samples.png").is_file() and (tmp_path / "a" / "samples" / "step_000003.png").is_file()

    ckpt = str(tmp_path / "a" / "last.pt")
    draw = lambda *args: (sample.run(sample.main, ["--ckpt", ckpt, *args]), capsys.readouterr())
    code, _ = draw("-n", "20", "--out", str(tmp_path / "g.png"), "--interpolate", "5")
    assert code == 0 and (tmp_path / "g.png").is_file() and (tmp_path / "g_interp.gif").is_file()
    code, out = draw("-n", "4", "--class", "3", "--min-d-prob", "0.0", "--out", str(tmp_path / "h.png"))
    assert code == 0 and "kept 4 of 4 draws" in out.out
    code, out = draw("-n", "4", "--min-d-prob", "1.0", "--out", str(tmp_path / "i.png"))
    assert code == 2 and "ask for a lower threshold" in out.err
    code, out = draw("--strip", "--out", str(tmp_path / "j.png"))
    assert code == 2 and "a GAN has no reverse process" in out.err
    for flag in (["--sampler", "ddpm"], ["--guidance", "2"], ["--color-target", "1"], ["--negative-class", "2"]):
        code, out = draw(*flag, "--out", str(tmp_path / "k.png"))
        assert code == 2 and f"{flag[0]} is for diffusion checkpoints" in out.err, out.err


def test_discriminator_targets_smooth_reals_and_flip_a_few():
    """Real targets are 0.9, fake 0; with flip probability p about p of the pairs are swapped."""
    from minigen.models.dcgan import discriminator_targets
    real, fake = discriminator_targets(8, 0.9, 0.0)
    assert torch.all(real == 0.9) and torch.all(fake == 0)
    real, fake = discriminator_targets(20000, 0.9, 0.1, generator=torch.Generator().manual_seed(0))
    swapped = real == 0
    assert torch.all(fake[swapped] == 0.9) and torch.all(fake[~swapped] == 0) and torch.all(real[~swapped] == 0.9)
    assert swapped.float().mean().item() == pytest.approx(0.1, abs=0.01)
