"""The hot path never reads a value on the host, so a GPU never waits for it and torch.compile
sees whole graphs.

On PyTorch's `meta` device a tensor has a shape and no values: any host read (`.item()`, `bool()`,
`.cpu()`, indexing a CPU table with it) fails with "Cannot copy out of meta tensor" or the like.
So each script's training step (loss, backward, optimizer step, EMA update) and one sampler step
run here with every tensor on `meta`; and each piece compiles with `fullgraph=True` (Dynamo
refuses any graph break; the `eager` backend checks the capture without generating code).
`loss.backward()` itself cannot be inside a Dynamo graph: its graph is the compiled forward's,
made by AOTAutograd, so forward + loss, the optimizer step and the EMA update are compiled apart
(as a CUDA-graphed training step would capture them).
"""

import dataclasses
import inspect

import pytest
import torch

import train_ddpm
import train_gan
import train_vit
from minigen.diffusion import Denoiser, Diffusion, DiffusionConfig, SamplerConfig
from minigen.diffusion.samplers import make_step
from minigen.models import dcgan, unet, vit
from minigen.training.ema import EMA

META = torch.device("meta")


def ddpm_parts(device):
    cfg = train_ddpm.TrainConfig(preset="tiny", min_snr=5.0, cond_drop=0.1)
    model = unet.UNet(unet.preset("tiny", num_classes=10, dropout=0.1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    diffusion = Diffusion.from_config(DiffusionConfig(prediction="v")).to(device)
    batch = torch.randn(4, 1, 28, 28, device=device), {"y": torch.randint(0, 10, (4,), device=device)}
    return cfg, model, optimizer, diffusion, batch


def test_ddpm_training_step_on_meta():
    cfg, model, optimizer, diffusion, batch = ddpm_parts(META)
    loss, grad_norm = train_ddpm.train_step(model, model, diffusion, optimizer, EMA(model), batch, cfg)
    assert loss.device == META and grad_norm.device == META


def test_gan_training_step_on_meta():
    cfg = train_gan.GANTrainConfig(diffaug="color,translation,cutout", flip_prob=0.1)
    config = dcgan.preset("tiny", num_classes=3)
    G, D = dcgan.Generator(config).to(META), dcgan.Discriminator(config).to(META)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    y = torch.randint(0, 3, (4,), device=META)
    batch = (torch.randn(4, 1, 28, 28, device=META), y, torch.randn(4, config.z_dim, device=META), y)
    losses = train_gan.train_step(G, D, opt_g, opt_d, EMA(G), batch, cfg)
    assert all(v.device == META for v in losses)


def test_vit_training_step_on_meta():
    cfg = train_vit.ViTTrainConfig(noisy=True, shift=0.1)
    model = vit.ViT(vit.preset("tiny", time_conditioned=True)).to(META)
    noising = Diffusion.from_config(DiffusionConfig()).to(META)
    batch = torch.randn(4, 1, 28, 28, device=META), torch.randint(0, 10, (4,), device=META)
    loss = train_vit.train_step(model, torch.optim.AdamW(model.parameters()), batch, noising, cfg, [10])
    assert loss.device == META


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_a_guided_sampler_step_on_meta(sampler):
    from minigen.pipelines import DiffusionPipeline
    pipe = DiffusionPipeline(unet.UNet(unet.preset("tiny", num_classes=10)).to(META),
                             Diffusion.from_config(DiffusionConfig()).to(META))
    x = SamplerConfig(sampler, steps=2, eta=0.5 if sampler == "ddim" else 0.0, dynamic_threshold=0.9).sample(
        pipe.denoiser(3.0), pipe.noise(2), cond=pipe.condition(torch.tensor([1, 2])), progress=False)
    assert x.device == META and x.shape == (2, 1, 28, 28)


def test_the_pieces_of_a_step_compile_whole():
    """fullgraph=True: forward + loss, the clipped optimizer step, the EMA update, and one guided
    sampler step, each one graph without a break."""
    torch._dynamo.reset()
    cfg, model, optimizer, diffusion, (x0, cond) = ddpm_parts(torch.device("cpu"))
    y = cond["y"]
    ema = EMA(model)
    whole = lambda fn: torch.compile(fn, fullgraph=True, backend="eager")

    loss_fn = whole(lambda x0, y: diffusion.loss(model, x0, min_snr_gamma=5.0, **model.drop_condition(0.1, y)))
    loss = loss_fn(x0, y)
    loss.backward()

    # Optimizer.step breaks the graph on purpose around its body, so that AOTAutograd sees the
    # update as no-grad (pytorch/pytorch#104053); the body, the update itself, is one graph.
    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        inspect.unwrap(type(optimizer).step)(optimizer)
    with torch.no_grad():
        whole(update)()
    whole(ema.update)(model)

    d = Denoiser(diffusion, model)
    step = make_step(diffusion, "ddim", eta=0.5)
    one_step = whole(lambda x, cond_y: step(d(x, 999, y=cond_y), 999, 979))
    mean, std = one_step(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert mean.shape == (2, 1, 28, 28) and std > 0


def test_diffusion_tables_move_once_and_keep_their_values():
    """The tables on another device hold the same float64 values; samplers still read ᾱ exactly."""
    d = Diffusion.from_config(DiffusionConfig(schedule="cosine"))
    reference = d.alpha_bar.clone()
    moved = Diffusion.from_config(DiffusionConfig(schedule="cosine")).to(META)
    assert moved.alpha_bar.device == META and moved.alpha_bar.dtype == torch.float64
    assert [moved.alpha_bar_at(t) for t in (0, 500, 999)] == [reference[t].item() for t in (0, 500, 999)]
    assert dataclasses.asdict(moved.config) == dataclasses.asdict(d.config)


def test_gan_and_vit_losses_compile_whole():
    """The DCGAN's D loss on augmented reals and fakes, and the noisy ViT's loss on shifted,
    forward-noised images: each one graph."""
    import torch.nn.functional as F

    from minigen.models.dcgan import discriminator_targets
    from minigen.training.diffaug import diff_augment, translation
    torch._dynamo.reset()
    whole = lambda fn: torch.compile(fn, fullgraph=True, backend="eager")
    config = dcgan.preset("tiny", num_classes=3)
    G, D = dcgan.Generator(config), dcgan.Discriminator(config)

    def loss_d(real, y, z):
        target_real, target_fake = discriminator_targets(len(real), 0.9, 0.05, real.device)
        logits_real = D(diff_augment(real, "color,translation,cutout"), y)
        logits_fake = D(diff_augment(G(z, y).detach(), "color,translation,cutout"), y)
        return (F.binary_cross_entropy_with_logits(logits_real, target_real)
                + F.binary_cross_entropy_with_logits(logits_fake, target_fake))
    y = torch.randint(0, 3, (4,))
    assert whole(loss_d)(torch.randn(4, 1, 28, 28), y, torch.randn(4, config.z_dim)).dim() == 0

    model = vit.ViT(vit.preset("tiny", time_conditioned=True))
    noising = Diffusion.from_config(DiffusionConfig())

    def loss_vit(x, y):
        t = torch.randint(0, noising.T, (len(x),))
        return F.cross_entropy(model(noising.q_sample(translation(x, 0.1), t), t), y)
    assert whole(loss_vit)(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))).dim() == 0
