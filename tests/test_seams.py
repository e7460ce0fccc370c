"""The sampler's seams: what the network is conditioned on passes through every sampler, guidance
and edit untouched; frames are captioned with the timestep their image is at."""

import pytest
import torch

from minigen.diffusion import (ClassifierFreeGuidance, ClassifierGuidance, Denoiser, Diffusion, Frames, LossGuidance,
                               SamplerConfig)
from minigen.diffusion.editing import colour_loss, ddim_invert, repaint_projection, repaint_timesteps, sdedit_start
from minigen.diffusion.samplers import frame_caption
from minigen.diffusion.schedules import make_betas

B = 3
COND = torch.arange(B * 2 * 5, dtype=torch.float32).reshape(B, 2, 5)      # any shape: (B, 2, 5)
NULL = torch.full((B, 2, 5), -1.0)


class Recorder:
    """A network conditioned on `emb`, which it only records; its output depends on nothing else."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, emb):
        self.seen.append(emb)
        return 0.1 * x

    def null_condition(self, emb):
        return {"emb": torch.full_like(emb, -1.0)}


def passed_unchanged(seen: list) -> bool:
    """Every call saw COND itself, or COND and the null condition stacked by classifier-free guidance."""
    return len(seen) > 0 and all(torch.equal(e, COND) or torch.equal(e, torch.cat([COND, NULL])) for e in seen)


@pytest.mark.parametrize("sampler,guidance", [("ddim", 1.0), ("ddpm", 1.0), ("ddim", 3.0), ("ddpm", 3.0)])
@pytest.mark.parametrize("wrap", ["none", "loss", "classifier", "negative"])
def test_a_condition_of_any_shape_reaches_the_network_untouched(sampler, guidance, wrap):
    d = Diffusion(make_betas("linear", 50))
    net = Recorder()
    network = ClassifierFreeGuidance(net, guidance) if guidance != 1.0 else net
    if wrap == "negative":
        network = ClassifierFreeGuidance(net, guidance, negative={"emb": NULL})
    denoiser = Denoiser(d, network)
    if wrap == "loss":
        denoiser = LossGuidance(denoiser, colour_loss([0.5]), 1.0)
    if wrap == "classifier":
        denoiser = ClassifierGuidance(denoiser, lambda x, t: x.flatten(1)[:, :2], 1.0, torch.zeros(B, dtype=torch.long))
    config = SamplerConfig(sampler, steps=4, dynamic_threshold=0.9)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(B, 1, 4, 4, generator=g)
    config.sample(denoiser, x_T, cond={"emb": COND}, generator=g, progress=False)
    # The edits: RePaint, SDEdit and inversion go through the same loop and denoiser.
    keep = torch.ones(1, 1, 4, 4)
    keep[..., :2] = 0
    ts = repaint_timesteps(config.timesteps(d), 2, 2)
    config.sample(denoiser, x_T, ts, cond={"emb": COND}, generator=g, project=repaint_projection(d, x_T, keep, g),
                  progress=False)
    x_t0, ts = sdedit_start(d, x_T, 0.5, config.timesteps(d), g)
    config.sample(denoiser, x_t0, ts, cond={"emb": COND}, generator=g, progress=False)
    ddim_invert(denoiser, x_T, config.timesteps(d), cond={"emb": COND}, refine=1, progress=False)
    assert passed_unchanged(net.seen)
    assert any(len(e) == 2 * B for e in net.seen) == (guidance != 1.0 or wrap == "negative")


def test_each_frame_is_captioned_with_the_timestep_its_image_is_at():
    """Data: one point x_0*. The exact ε̂ = (x_t − √ᾱ_t·x_0*)/√(1 − ᾱ_t) makes deterministic DDIM
    follow q exactly: started from x_T = √ᾱ_T·x_0* + √(1 − ᾱ_T)·e, the image after each step is
    √ᾱ_s·x_0* + √(1 − ᾱ_s)·e, where s is the level it reached. So the frame captioned "t=s" must
    equal that closed form at s, and the last ("x_0") x_0* itself."""
    d = Diffusion(make_betas("cosine", 1000))
    x0 = torch.linspace(-0.8, 0.8, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    e = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    at = lambda s: (x0 if s < 0 else d.alpha_bar[s] ** 0.5 * x0 + (1 - d.alpha_bar[s]) ** 0.5 * e)

    def exact_eps(x, t):
        ab = d.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    sampler = SamplerConfig("ddim", steps=7, clip_x0=False)
    ts = sampler.timesteps(d)
    frames = Frames()
    sampler.sample(Denoiser(d, exact_eps), at(ts[0]), callback=frames, progress=False)
    strip, captions = frames.strip(n=len(ts))
    assert len(captions) == len(ts) and captions[-1] == "x_0"
    for image, caption in zip(strip, captions):
        s = -1 if caption == "x_0" else int(caption.removeprefix("t="))
        assert torch.allclose(image, at(s)[0], atol=1e-9), caption
    assert captions[:-1] == [frame_caption(s) for s in ts[1:]]
