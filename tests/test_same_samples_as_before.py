"""Old checkpoints still load, and still give the samples, edits, inversions, GAN draws and
training losses they gave when they were written, through today's seams (the pipeline loader,
the denoiser and its guidance wrappers, the one sampling loop, the editing pieces).

What is kept here, and why: the four format-1 checkpoints in tests/data/before_refactor (two
tiny U-Nets, a GAN, a noise-aware ViT, written by the scripts before the first architecture
change; made by make_reference.py there) are what users' old checkpoints look like, so they are
loaded on every torch build; the samples recorded from them (samples.pt) catch any change of a
formula, which moves a sample by far more than the tolerance below.

What was cut: bit-for-bit equality. It held for one torch build on one kind of CPU only (the
records differ by up to 1.2e-4 relative on another x86 CPU with the same torch 2.13, from its
convolution kernels), so it skipped everywhere else and failed on other CPUs. The refactors
that moved these files (one home per formula, train_ldm.py, edit.py) were checked bit for bit
on the machine that made them, before and after, with a throw-away script; here the samples
are compared to 1e-3 of their range, and the losses to 1e-3 relative.
"""

import importlib
import json
from pathlib import Path

import pytest
import torch

from minigen import pipelines
from minigen.diffusion import ClassifierGuidance, Frames, LossGuidance, SamplerConfig
from minigen.diffusion.editing import colour_loss, ddim_invert, repaint_projection, repaint_timesteps, sdedit_start
from minigen.interpolation import slerp

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "before_refactor"
REF = torch.load(DATA / "samples.pt", weights_only=True)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipes():
    """The format-1 checkpoints, written by the scripts before the change, through today's loader."""
    return {name: pipelines.load(DATA / f"{name}.pt") for name in ("ddpm", "v", "gan", "vit")}


def same(name: str, x: torch.Tensor) -> None:
    """The recorded sample, to float rounding: within 1e-3 of its range."""
    tolerance = 1e-3 * max(1.0, REF[name].abs().max().item())
    assert x.shape == REF[name].shape
    assert torch.allclose(x, REF[name], rtol=0, atol=tolerance), \
        f"{name}: max difference {(x - REF[name]).abs().max().item():.3g} (tolerance {tolerance:.3g})"


Y = torch.tensor([0, 3, 7, 9])


def test_old_checkpoints_load_as_pipelines(pipes):
    assert pipes["ddpm"].diffusion.prediction == "eps" and pipes["ddpm"].image_shape == (1, 28, 28)
    assert pipes["v"].diffusion.prediction == "v" and pipes["v"].diffusion.T == 200 and pipes["v"].image_shape == (3, 16, 16)
    assert pipes["gan"].generator.config.image_size == (28, 28)          # an int in format 1
    assert pipes["vit"].network.config.time_conditioned and len(pipes["vit"].classes) == 10


def test_ddim_with_guidance_and_its_frames(pipes):
    p = pipes["ddpm"]
    frames = Frames()
    x = SamplerConfig("ddim", steps=6).sample(p.denoiser(3.0), p.noise(4, g(1)), cond=p.condition(Y), callback=frames,
                                              progress=False)
    same("ddim_cfg", x)
    same("ddim_cfg_x_t", torch.stack(frames.x_t))
    same("ddim_cfg_x0", torch.stack(frames.x0))
    # Frames are captioned with the timestep their image is at: the next one down, then −1 (clean).
    assert frames.t == REF["ddim_cfg_t"].tolist()[1:] + [-1]


def test_ddim_eta_leading_dynamic_threshold_negative_class(pipes):
    p = pipes["ddpm"]
    sampler = SamplerConfig("ddim", steps=5, eta=0.5, spacing="leading", dynamic_threshold=0.9)
    x = sampler.sample(p.denoiser(2.0, negative=p.condition(torch.ones(4, dtype=torch.long))), p.noise(4, gen := g(2)),
                       cond=p.condition(Y), generator=gen, progress=False)
    same("ddim_eta_leading_dyn_neg", x)


def test_ddpm_large_variance_without_clipping_and_unconditional(pipes):
    p = pipes["ddpm"]
    x = SamplerConfig("ddpm", steps=7, spacing="linspace", variance="large", clip_x0=False).sample(
        p.denoiser(), p.noise(4, gen := g(3)), cond=p.condition(Y), generator=gen, progress=False)
    same("ddpm_large_noclip", x)
    x = SamplerConfig("ddpm", steps=4).sample(p.denoiser(), p.noise(2, gen := g(4)), generator=gen, progress=False)
    same("ddpm_uncond_null", x)                                  # no label: the network's null label


def test_classifier_guidance(pipes):
    p = pipes["ddpm"]
    denoiser = ClassifierGuidance(p.denoiser(3.0), pipes["vit"].network, 2.0, Y)
    same("ddim_classifier", SamplerConfig("ddim", steps=5).sample(denoiser, p.noise(4, g(5)), cond=p.condition(Y),
                                                                  progress=False))


def test_colour_loss_guidance_on_a_v_prediction_model(pipes):
    p = pipes["v"]
    red = colour_loss([1.0, -1.0, -1.0])
    x = SamplerConfig("ddim", steps=6).sample(LossGuidance(p.denoiser(), red, 20.0), p.noise(3, g(6)), progress=False)
    same("v_colour", x)
    y = torch.tensor([0, 1, 2])
    x = SamplerConfig("ddpm", steps=5).sample(LossGuidance(p.denoiser(2.0), red, 5.0), p.noise(3, gen := g(6)),
                                              cond=p.condition(y), generator=gen, progress=False)
    same("v_colour_ddpm", x)


def test_inpainting_sdedit_and_inversion(pipes):
    p, d = pipes["ddpm"], pipes["ddpm"].diffusion
    image = torch.linspace(-1, 1, 28 * 28).reshape(1, 1, 28, 28)
    keep = torch.ones(1, 1, 28, 28)
    keep[..., 8:20, 8:20] = 0
    two = lambda label: p.condition(torch.tensor([label, label]))
    sampler = SamplerConfig("ddpm", steps=12)
    gen = g(7)
    x = sampler.sample(p.denoiser(3.0), p.noise(2, gen), repaint_timesteps(sampler.timesteps(d), 4, 1), cond=two(2),
                       generator=gen, project=repaint_projection(d, image.expand(2, -1, -1, -1), keep, gen), progress=False)
    same("inpaint", x)
    gen = g(8)
    ddim = SamplerConfig("ddim", steps=10)
    x_t0, ts = sdedit_start(d, image.expand(2, -1, -1, -1), 0.5, ddim.timesteps(d), gen)
    same("sdedit", ddim.sample(p.denoiser(3.0), x_t0, ts, cond=two(4), generator=gen, progress=False))
    null = p.condition(torch.tensor([10]))
    x_T = ddim_invert(p.denoiser(), image, SamplerConfig(steps=8).timesteps(d), cond=null, refine=2, progress=False)
    same("invert_x_T", x_T)
    same("invert_back", SamplerConfig(steps=8, clip_x0=False).sample(p.denoiser(), x_T, cond=null, progress=False))
    same("invert_edit", SamplerConfig(steps=8).sample(p.denoiser(3.0), x_T, cond=p.condition(torch.tensor([5])),
                                                      progress=False))


def test_gan_samples_filtered_samples_and_a_walk(pipes):
    p = pipes["gan"]
    same("gan", p.sample(Y, 4, g(9))[0])
    x, drawn = p.sample(Y, 4, g(10), min_d_prob=0.3)
    same("gan_filtered", x)
    assert drawn == REF["gan_filtered_drawn"].item()
    ends = torch.randn(2, 16, generator=g(11))
    with torch.no_grad():
        same("gan_slerp", p.generator(slerp(ends[0], ends[1], torch.linspace(0, 1, 5)), torch.full((5,), 3)))


@pytest.mark.parametrize("script,name,args", [
    ("train_ddpm.py", "ddpm", ["--steps", "8", "--warmup", "2", "--sample-steps", "2", "--prediction", "eps"]),
    ("train_ddpm.py", "v", ["--steps", "8", "--warmup", "2", "--sample-steps", "2", "--dataset", "shapes",
                            "--image-size", "16", "--prediction", "v", "--T", "200", "--schedule", "cosine"]),
    ("train_gan.py", "gan", ["--steps", "8"]),
    ("train_vit.py", "vit", ["--steps", "8", "--eval-every", "0", "--noisy"]),
])
def test_training_runs_log_the_same_losses(tmp_path, script, name, args):
    """The same run through the shared lifecycle: every logged loss, learning rate and gradient norm."""
    extra = ["--sample-every", "0"] if script != "train_vit.py" else []
    module = importlib.import_module(script[:-3])           # in this process, as `python script ...` runs it
    assert module.run(module.main, ["--preset", "tiny", "--batch-size", "8", "--log-every", "1", *extra, *args,
                                    "--out", str(tmp_path / name)]) == 0
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(REF[f"metrics_{name}"])
    for before, now in zip(REF[f"metrics_{name}"], rows):
        assert now["step"] == before["step"]
        for k, v in before.items():
            if k not in ("time", "step"):
                assert now[k] == pytest.approx(v, rel=1e-3, abs=1e-6), (before["step"], k)
