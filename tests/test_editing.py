"""Editing with analytic models: RePaint inpainting, SDEdit, loss guidance, PSNR/SSIM; sample.py's
editing flags and their one-line errors."""

import importlib
import math

import pytest
import torch
from PIL import Image

from minigen.diffusion import ClassifierGuidance, Denoiser, Diffusion, LossGuidance, SamplerConfig
from minigen.diffusion.editing import colour_loss, repaint_projection, repaint_timesteps, sdedit_start
from minigen.diffusion.schedules import make_betas
from minigen.evaluation.metrics import psnr, ssim


def flat_image_model(d: Diffusion, mu: float = 0.0, s: float = 0.5):
    """Exact ε-predictor for images whose pixels all share one value c ~ N(mu, s²): every pixel
    of x_t = √ᾱ·c + √(1−ᾱ)·ε observes c, so with P pixels
        E[c | x_t] = (mu/s² + √ᾱ·Σ_i x_t,i/(1−ᾱ)) / (1/s² + P·ᾱ/(1−ᾱ)),  x̂_0 = E[c | x_t]·1."""
    def model(x_t, t):
        ab = d.alpha_bar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        P = x_t[0].numel()
        c = (mu / s**2 + ab.sqrt() * x_t.sum(dim=(1, 2, 3), keepdim=True) / (1 - ab)) / (1 / s**2 + P * ab / (1 - ab))
        return (x_t - ab.sqrt() * c) / (1 - ab).sqrt()
    return model


def inpaint(d, model, x0, keep, steps, jump_length=10, resample=1, generator=None, sampler="ddpm", eta=0.0):
    """RePaint as sample.py runs it: the sampling loop with RePaint's timesteps and projection."""
    config = SamplerConfig(sampler, steps, eta)
    ts = repaint_timesteps(config.timesteps(d), jump_length, resample)
    return config.sample(Denoiser(d, model), torch.randn(x0.shape, generator=generator), ts, generator=generator,
                         project=repaint_projection(d, x0, keep, generator), progress=False)


def sdedit(d, model, x_init, strength, steps=50, generator=None, clip_x0=True):
    config = SamplerConfig("ddim", steps, clip_x0=clip_x0)
    x_t0, ts = sdedit_start(d, x_init, strength, config.timesteps(d), generator)
    return config.sample(Denoiser(d, model), x_t0, ts, generator=generator, progress=False)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 1.0)])
def test_inpainting_keeps_known_pixels_and_fills_from_the_conditional(sampler, eta):
    """Known left half = 0.7: the right half must come out 0.7 too (the conditional of a flat
    image given half of it is a point mass), and the known half is x_0 exactly; with either
    stochastic sampler (RePaint's harmonisation needs the fresh noise of each step)."""
    d = Diffusion(make_betas("linear", 1000))
    x0 = torch.full((6, 1, 4, 4), 0.7)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :, :2] = 1
    out = inpaint(d, flat_image_model(d), x0, keep, steps=50, jump_length=10, resample=3,
                  generator=torch.Generator().manual_seed(0), sampler=sampler, eta=eta)
    assert torch.equal(out[..., :, :2], x0[..., :, :2])
    assert (out[..., :, 2:] - 0.7).abs().max() < 0.1
    # Without the known half, the same sampler draws c from N(0, 0.5²): the fill really is conditional.
    free = inpaint(d, flat_image_model(d), x0, torch.zeros(1, 1, 4, 4), steps=50, resample=1,
                   generator=torch.Generator().manual_seed(0))
    assert free.mean(dim=(1, 2, 3)).std() > 0.2


def test_repaint_timesteps_walk_each_block_resample_times():
    """Steps 9, 6, 3, 0, then −1, in blocks of 2 steps: [9 6 3] and [3 0 −1]. The first is walked
    twice with a jump back up to 9 between; the last, ending on clean data, once:
    9 6 3 | 9 6 3 | 0 (and the loop's last step to −1)."""
    assert repaint_timesteps([9, 6, 3, 0], jump_length=2, resample=2) == [9, 6, 3, 9, 6, 3, 0]
    assert repaint_timesteps([9, 6, 3, 0, -5][:4], jump_length=3, resample=3) == [9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0]
    assert repaint_timesteps([9, 6, 3, 0], jump_length=2, resample=1) == [9, 6, 3, 0]


def test_sdedit_strength_zero_returns_the_input_and_one_ignores_it():
    d = Diffusion(make_betas("linear", 1000))
    model = flat_image_model(d)
    a, b = torch.full((2, 1, 4, 4), 0.8), torch.full((2, 1, 4, 4), -0.8)
    assert torch.equal(sdedit(d, model, a, 0.0), a)
    gen = lambda: torch.Generator().manual_seed(3)
    out_a = sdedit(d, model, a, 1.0, steps=20, generator=gen())
    out_b = sdedit(d, model, b, 1.0, steps=20, generator=gen())
    assert torch.equal(out_a, out_b)
    # At a low strength the input survives: outputs from +0.8 and from −0.8 stay far apart.
    many_a, many_b = torch.full((32, 1, 4, 4), 0.8), torch.full((32, 1, 4, 4), -0.8)
    low_a = sdedit(d, model, many_a, 0.3, steps=20, generator=gen(), clip_x0=False)
    low_b = sdedit(d, model, many_b, 0.3, steps=20, generator=gen(), clip_x0=False)
    assert low_a.mean() - low_b.mean() > 0.8
    with pytest.raises(ValueError, match="strength"):
        sdedit(d, model, a, 1.5)


def test_loss_guidance_moves_the_sample_mean_towards_the_target_colour():
    """Same seed, with and without guidance towards 0.8: the guided mean is clearly closer."""
    d = Diffusion(make_betas("linear", 1000))
    model = Denoiser(d, flat_image_model(d, mu=0.0, s=0.5))
    sampler = SamplerConfig("ddim", 25, clip_x0=False)
    x_T = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    plain = sampler.sample(model, x_T, progress=False)
    guided = sampler.sample(LossGuidance(model, colour_loss([0.8]), 2.0), x_T, progress=False)
    assert abs(guided.mean().item() - 0.8) < abs(plain.mean().item() - 0.8) - 0.2


def test_psnr_and_ssim_closed_forms():
    """PSNR of a constant error 0.2 over range 2: 10·log10(4/0.04) = 20 dB. SSIM of two flat
    images a, b (no variance) is the luminance term (2ab + C1)/(a² + b² + C1), C1 = (0.01·2)²."""
    x = torch.zeros(1, 1, 16, 16)
    assert psnr(x, x + 0.2) == pytest.approx(20.0)
    assert psnr(x, x) == math.inf
    y = torch.rand(2, 3, 16, 16)
    assert ssim(y, y) == pytest.approx(1.0)
    a, b, c1 = 0.5, -0.25, (0.01 * 2) ** 2
    assert ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)) == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import train_ddpm
    out = tmp_path_factory.mktemp("edit")
    assert train_ddpm.run(train_ddpm.main, ["--preset", "tiny", "--steps", "2", "--batch-size", "8", "--sample-every",
                                            "0", "--sample-steps", "2", "--out", str(out)]) == 0
    Image.new("L", (28, 28), 200).save(out / "gray.png")
    Image.new("RGB", (28, 28), (200, 0, 0)).save(out / "rgb.png")
    Image.new("L", (14, 14), 255).save(out / "small_mask.png")
    return out


def test_edit_py_commands_write_side_by_side_pictures(tiny_ckpt, capsys):
    import edit                                       # in this process, as `python edit.py ...` runs it
    ckpt, out = str(tiny_ckpt / "last.pt"), tiny_ckpt
    for args in (["--inpaint", str(out / "gray.png"), "--mask-box", "0,14,28,28", "--steps", "4", "--resample", "2",
                  "--jump-length", "2", "--class", "1", "-n", "2"],
                 ["--init", str(out / "gray.png"), "--strength", "0.5", "--steps", "4", "--class", "2", "-n", "2"],
                 ["--invert", str(out / "gray.png"), "--steps", "3", "--class", "4"],
                 # every sampler option reaches the edits: DDPM SDEdit with a negative class and thresholding
                 ["--init", str(out / "gray.png"), "--sampler", "ddpm", "--steps", "3", "--class", "2",
                  "--negative-class", "5", "--dynamic-threshold", "0.9", "--variance", "large", "-n", "2"],
                 ["--inpaint", str(out / "gray.png"), "--mask-box", "0,0,10,10", "--sampler", "ddim", "--eta", "1",
                  "--steps", "4", "--class", "3", "-n", "2", "--spacing", "leading"]):
        code = edit.run(edit.main, ["--ckpt", ckpt, "--out", str(out / "edit.png"), "--no-progress", *args])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert Image.open(out / "edit.png").width > 3 * 28
        if "--invert" in args:
            assert "PSNR" in printed.out and "SSIM" in printed.out


@pytest.mark.parametrize("name,args,message", [
    ("edit.py", ["--inpaint", "gray.png", "--mask", "small_mask.png", "--class", "1"], "must have the image's size"),
    ("edit.py", ["--inpaint", "gray.png", "--mask", "rgb.png", "--class", "1"], "must be grayscale"),
    ("edit.py", ["--init", "rgb.png", "--class", "1"], "an RGB image, but the model makes grayscale images"),
    ("edit.py", ["--init", "gray.png", "--strength", "0", "--class", "1"], "must be in (0, 1]"),
    ("edit.py", ["--init", "gray.png", "--strength", "1.5", "--class", "1"], "must be in (0, 1]"),
    ("edit.py", ["--inpaint", "gray.png", "--mask-box", "0,0,40,10", "--class", "1"], "must lie inside"),
    ("edit.py", ["--init", "missing.png", "--class", "1"], "no such image file"),
    ("edit.py", ["--init", "gray.png", "--class", "1", "--sampler", "ddpm", "--eta", "0.5"], "--eta is DDIM's noise"),
    ("sample.py", ["--sampler", "ddpm", "--eta", "0.5"], "--eta is DDIM's noise"),
    ("sample.py", ["--variance", "large"], "--variance is the ddpm sampler's"),
    ("edit.py", ["--mask-box", "0,0,4,4"], "--mask-box goes with --inpaint"),
    ("edit.py", ["--strength", "0.3"], "--strength goes with --init"),
    ("edit.py", ["--class", "1"], "say what to edit"),
    ("edit.py", ["--init", "gray.png", "--class", "1", "--strip"], "unrecognized arguments: --strip"),
    ("edit.py", ["--init", "gray.png", "--invert", "gray.png"], "one edit at a time"),
    ("edit.py", ["--invert", "gray.png", "-n", "3"], "--invert works on one image"),
    ("sample.py", ["--min-d-prob", "0.5"], "needs a GAN checkpoint"),
    # the command lines of before edit.py: one line naming it
    ("sample.py", ["--inpaint", "gray.png", "--mask-box", "0,0,4,4"], "editing is edit.py's now"),
    ("sample.py", ["--init", "gray.png"], "--init: editing is edit.py's now"),
    ("sample.py", ["--invert", "gray.png"], "--invert: editing is edit.py's now"),
])
def test_sample_and_edit_reject_bad_input_in_one_line(tiny_ckpt, capsys, name, args, message):
    args = [str(tiny_ckpt / a) if a.endswith(".png") else a for a in args]
    module = importlib.import_module(name[:-3])             # in this process, as `python name ...` runs it
    code = module.run(module.main, ["--ckpt", str(tiny_ckpt / "last.pt"), "--out", str(tiny_ckpt / "x.png"),
                                    "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.strip().count("\n") == 0, err


def test_classifier_guidance_follows_the_gradient_of_the_exact_classifier():
    """Data: x_0 = ±0.6 (class 1 or 0, equally likely) plus N(0, 0.1²) per pixel. The exact
    p(y | x_t) of that mixture is known, so guidance toward class 1 must raise the share of
    samples landing near +0.6, compared with unguided sampling from the same noise."""
    d = Diffusion(make_betas("linear", 1000))
    m, s = 0.6, 0.1

    def log_joint(x_t, t):   # log N(x_t; ±√ᾱ·m, ᾱs² + 1 − ᾱ) summed over pixels, for both classes
        ab = d.alpha_bar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        var = ab * s**2 + 1 - ab
        return torch.stack([(-(x_t - sign * ab.sqrt() * m) ** 2 / (2 * var)).flatten(1).sum(1)
                            for sign in (-1.0, 1.0)], dim=1)                # (B, 2): class 0 at −m, 1 at +m

    def model(x_t, t):       # exact ε̂ = E[ε | x_t] of the mixture
        ab = d.alpha_bar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        var = ab * s**2 + 1 - ab
        w = torch.softmax(log_joint(x_t, t), dim=1)                        # p(y | x_t)
        mean = (w[:, 1] - w[:, 0]).view(-1, 1, 1, 1) * ab.sqrt() * m        # E[√ᾱ·x_0 | x_t]
        return (1 - ab).sqrt() / var * (x_t - mean)                         # ≈ E[ε | x_t]

    y = torch.ones(200, dtype=torch.long)
    sampler = SamplerConfig("ddim", 25, clip_x0=False)
    x_T = torch.randn(200, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    plain = sampler.sample(Denoiser(d, model), x_T, progress=False)
    guided = sampler.sample(ClassifierGuidance(Denoiser(d, model), log_joint, 3.0, y), x_T, progress=False)
    share = lambda x: (x.mean(dim=(1, 2, 3)) > 0).float().mean().item()
    assert 0.3 < share(plain) < 0.7
    assert share(guided) > share(plain) + 0.2
