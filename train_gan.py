"""Train a DCGAN (Radford et al. 2015), the two-player game written out phase by phase.

    python train_gan.py                                   # class-conditional digits (built-in glyphs), CPU
    python train_gan.py --dataset shapes                  # the built-in RGB shapes at 32x32
    python train_gan.py --dataset folder:~/xrays --image-size 128 --channels 1 --preset dcgan
    python train_gan.py --resume                          # continue runs/gan/last.pt to --steps

The classic training tricks are flags, each on by default where it helps:
    --ema-decay 0.999   sample from an exponential moving average of G: the average of the
                        last few hundred generators is smoother than any single one of them,
                        which oscillates as D keeps moving (Yazıcı et al. 2019).
    --real-label 0.9    one-sided label smoothing (Salimans et al. 2016, §3.4): D's target for
                        real images is 0.9, not 1, so D cannot become over-confident and G keeps
                        getting useful gradients. Only the real side: smoothing fakes would
                        reward G for staying where fakes are. 0.8 is also common.
    --flip-prob 0.05    swap real and fake targets for a few images each step: noisy labels keep
                        D from winning outright early on.
    --diffaug translation   differentiable augmentation of real and fake images for D
                        (Zhao et al. 2020): D cannot memorise the training set. Add ",cutout,color"
                        for small data sets.

Writes into --out (default runs/gan): last.pt, metrics.jsonl, samples/step_NNNNNN.png (fixed
noise and labels every --sample-every steps) and samples.png (a row per class) at the end.
Warns when D's loss collapses towards 0 or the fixed-noise samples lose their diversity.
Ctrl-C saves a checkpoint and stops; --resume continues bit for bit (on CPU).
"""

import dataclasses
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minigen.cli import STEPS, at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, load_dataset
from minigen.device import seed_everything
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.images import save_grid
from minigen.models.dcgan import PRESETS, SIZES, Discriminator, Generator, discriminator_targets, preset
from minigen.training.diffaug import POLICIES, diff_augment
from minigen.training.ema import EMA
from minigen.training.lifecycle import Run, RunConfig


@dataclass
class GANTrainConfig(DataConfig, RunConfig):
    image_size: int | None = setting(None, f"resize images to SIZE x SIZE, one of {SIZES} (required for folder:PATH)",
                                    check=lambda v: None if v in SIZES else f"must be one of {SIZES}")
    preset: str = setting("cpu", "network size", choices=PRESETS)
    steps: int = setting(5000, "total steps (one D update and one G update each) of the run", runtime=True,
                         check=STEPS)
    batch_size: int = setting(64, "real images per step (per process under torchrun)", check=at_least(1))
    lr_g: float = setting(2e-4, "Adam learning rate of G (Radford et al.: 2e-4)", check=positive)
    lr_d: float = setting(2e-4, "Adam learning rate of D (Radford et al.: 2e-4)", check=positive)
    beta1: float = setting(0.5, "Adam β1 (Radford et al.: 0.5, for stability)",
                          check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    beta2: float = setting(0.999, "Adam β2", check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    ema_decay: float = setting(0.999, "largest EMA decay of G's weights (0: no EMA); samples and checkpoints use the EMA G",
                                check=between(0, 1))
    real_label: float = setting(0.9, "D's target for real images: one-sided label smoothing (1: off; 0.8 is also common)",
                                check=between(0, 1, low_open=True))
    flip_prob: float = setting(0.05, "probability of swapping an image's real/fake target in D's update (0: off)",
                               check=between(0, 1))
    diffaug: str = setting("translation", f"DiffAugment policies for D's inputs, comma-separated: {','.join(POLICIES)} ('': off)",
                           check=lambda v: next((f"unknown policy {p!r}; choose from {', '.join(POLICIES)}"
                                                 for p in v.split(",") if p and p not in POLICIES), None))
    out: str = setting("runs/gan", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)
    compile: bool = setting(False, "torch.compile G and D (the plain modules are what gets saved)", runtime=True)
    amp: bool = setting(False, "bf16 autocast (CUDA only)", runtime=True)
    sample_every: int = setting(500, "write a fixed-noise sample grid every N steps (0: only at the end)", runtime=True,
                                check=non_negative)


D_COLLAPSE_LOSS, D_COLLAPSE_STEPS, DIVERSITY_FLOOR, DIVERSITY_FROM = 0.05, 200, 0.25, 500


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Average L2 distance between the images of a batch: near 0 when G makes one image for all z."""
    flat = x.flatten(1).float()
    d = torch.cdist(flat, flat)
    n = len(flat)
    return (d.sum() / (n * (n - 1))).item()


def train_step(net_g, net_d, opt_g, opt_d, ema: EMA, batch, cfg):
    """One step of the game, D's update then G's, and the EMA of G. batch: real images, their
    labels, the latents z and the labels asked of G (None for an unconditional GAN). No value is
    read on the host here: tests run it on the meta device."""
    real, labels, z, fake_labels = batch
    B = len(real)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and real.device.type == "cuda")

    # (1) Update D: maximise log D(x) + log(1 − D(G(z))), i.e. minimise
    #     BCE(D(x), real_label) + BCE(D(G(z)), 0), with a few targets swapped.
    target_real, target_fake = discriminator_targets(B, cfg.real_label, cfg.flip_prob, real.device)
    with autocast():
        fake = net_g(z, fake_labels)
        logits_real = net_d(diff_augment(real, cfg.diffaug), labels)
        logits_fake = net_d(diff_augment(fake.detach(), cfg.diffaug), fake_labels)   # no gradient into G
        loss_d = (F.binary_cross_entropy_with_logits(logits_real.float(), target_real)
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), target_fake))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # (2) Update G: maximise log D(G(z)), the non-saturating loss (Goodfellow et al. §3):
    #     minimise BCE(D(G(z)), 1) rather than maximise BCE(D(G(z)), 0), whose gradient
    #     vanishes exactly when G is bad and D confidently rejects its images.
    with autocast():
        logits = net_d(diff_augment(fake, cfg.diffaug), fake_labels)
        loss_g = F.binary_cross_entropy_with_logits(logits.float(), torch.ones(B, device=real.device))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()                       # D's parameters get gradients too; opt_d never sees them
    opt_g.step()
    ema.update(net_g)
    return loss_d.detach(), loss_g.detach(), logits_real.detach(), logits_fake.detach()


def main(argv=None) -> int:
    run_ = Run.from_command_line(GANTrainConfig, "gan", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    diff_augment(torch.zeros(1, 1, 8, 8), cfg.diffaug)          # an unknown policy fails here, not at step 1
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = cfg.select(load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size,
                                   channels=cfg.channels, seed=cfg.seed, download_missing=cfg.download and run_.main))
    C, H, W = data.shape
    if H != W or H not in SIZES:
        raise MinigenError(f"the DCGAN makes square images of {SIZES} pixels; {cfg.dataset} gives {H}x{W}: "
                           "pass --image-size")
    conditional = len(data.classes) > 1
    say(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}, "
        + (f"{len(data.classes)} classes (class-conditional)" if conditional else "unconditional"))

    # ---- G, D, optimizers, EMA ----------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W), num_classes=len(data.classes) if conditional else 0)
    G, D = Generator(model_cfg).to(device), Discriminator(model_cfg).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    ema = EMA(G, max_decay=cfg.ema_decay, power=3 / 4)
    y1 = torch.zeros(1, dtype=torch.long, device=device) if conditional else None
    g_flops = count_flops(G.eval(), torch.zeros(1, model_cfg.z_dim, device=device), y1)
    d_flops = count_flops(D.eval(), torch.zeros(1, C, H, W, device=device), y1)
    say(f"model: DCGAN '{cfg.preset}': G {count_parameters(G) / 1e6:.2f}M parameters, {g_flops / 1e6:.1f} MFLOP; "
        f"D {count_parameters(D) / 1e6:.2f}M parameters, {d_flops / 1e6:.1f} MFLOP per {H}x{W} image")
    say(f"config: {dataclasses.asdict(cfg)}")
    say(f"model config: {dataclasses.asdict(model_cfg)}")

    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_fixed = 4 * len(data.classes) if conditional else 40
    fixed_z = torch.randn(n_fixed, model_cfg.z_dim, generator=g).to(device)
    fixed_labels = (torch.arange(n_fixed) % len(data.classes)).to(device)
    run_.attach(G, model_cfg, ema=ema, optimizer=opt_g, others={"discriminator": D, "optimizer_d": opt_d},
                extra={"classes": list(data.classes)}, classes=list(data.classes) if conditional else [])
    real_diversity = mean_pairwise_distance(data.batch(torch.arange(min(len(data), n_fixed)))[0])
    net_g, net_d = run_.wrap(G), run_.wrap(D)
    net_g, net_d = (torch.compile(net_g), torch.compile(net_d)) if cfg.compile else (net_g, net_d)

    def fixed_samples(step: int) -> float:
        """Write the EMA generator's samples of the fixed noise; return their diversity."""
        with torch.no_grad():
            x = ema.model(fixed_z, fixed_labels if conditional else None)
        captions = [data.classes[i][:8] for i in fixed_labels.tolist()] if conditional else None
        save_grid(x, run_.out / "samples" / f"step_{step:06d}.png", nrow=len(data.classes) if conditional else 10,
                  captions=captions)
        return mean_pairwise_distance(x)

    # ---- training loop --------------------------------------------------------------------
    d_low = torch.zeros((), dtype=torch.long, device=device)     # steps in a row with D's loss near 0
    with run_:
        for step in run_.steps():
            G.train(), D.train()
            real, y = data.batch(batch_indices(step, len(data), cfg.batch_size, cfg.seed, run_.rank, run_.world),
                                 flip=cfg.flip)
            real, y = real.to(device), y.to(device)
            z = torch.randn(len(real), model_cfg.z_dim, device=device)
            fake_labels = torch.randint(0, len(data.classes), (len(real),), device=device) if conditional else None
            batch = (real, y if conditional else None, z, fake_labels)
            loss_d, loss_g, logits_real, logits_fake = train_step(net_g, net_d, opt_g, opt_d, ema, batch, cfg)

            # ---- watch for the failure modes (on the device; the host looks at log steps) --------
            run_.check_finite("try lower learning rates", D=loss_d, G=loss_g)
            d_low = torch.where(loss_d < D_COLLAPSE_LOSS, d_low + 1, 0)
            if run_.due(cfg.log_every) and d_low.item() >= D_COLLAPSE_STEPS:
                say(f"warning: D's loss has stayed below {D_COLLAPSE_LOSS} for {d_low.item()} steps "
                    f"(now {loss_d.item():.4f}, G's {loss_g.item():.2f}): D is winning and G's gradients "
                    "are vanishing; try --diffaug translation,cutout or a smaller --lr-d")

            # ---- progress: log and pictures -----------------------------------------------------
            if run_.due(cfg.log_every):
                run_.log(loss_d=loss_d.item(), loss_g=loss_g.item(), d_real=torch.sigmoid(logits_real).mean().item(),
                         d_fake=torch.sigmoid(logits_fake).mean().item())
            if run_.main and run_.due(cfg.sample_every, last=False):
                diversity = fixed_samples(step + 1)
                if step + 1 >= DIVERSITY_FROM and diversity < DIVERSITY_FLOOR * real_diversity:
                    say(f"warning: possible mode collapse at step {step + 1}: fixed-noise samples are "
                        f"{diversity:.2f} apart on average, real images {real_diversity:.2f} "
                        f"({diversity / real_diversity:.0%})")
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- final pictures -------------------------------------------------------------------
    if run_.main:
        rows = len(data.classes) if conditional else 8
        z = torch.randn(rows * 10, model_cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        y = torch.arange(rows, device=device).repeat_interleave(10) if conditional else None
        with torch.no_grad():
            x = ema.model(z, y)
        grid = save_grid(x, run_.out / "samples.png", nrow=10,
                         row_labels=[c[:10] for c in data.classes] if conditional else None)
        say(f"wrote {grid}; fixed-noise diversity {fixed_samples(run_.step) / real_diversity:.0%} of the real images'")
        say(f"checkpoint: {run_.ckpt_path}; sample more with: python sample.py --ckpt {run_.ckpt_path}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
