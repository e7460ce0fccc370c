"""Train a DCGAN (Radford et al. 2015), the two-player game written out phase by phase.

    python train_gan.py                                   # class-conditional digits (built-in glyphs), CPU
    python train_gan.py --dataset shapes                  # the built-in RGB shapes at 32x32
    python train_gan.py --dataset folder:~/xrays --image-size 128 --channels 1 --preset dcgan
    python train_gan.py --resume                          # continue runs/gan/last.pt to --steps

The seeds' training tricks are flags, each on by default where it helps:
    --ema-decay 0.999   sample from an exponential moving average of G: the average of the
                        last few hundred generators is smoother than any single one of them,
                        which oscillates as D keeps moving (Yazıcı et al. 2019).
    --real-label 0.9    one-sided label smoothing (Salimans et al. 2016, §3.4): D's target for
                        real images is 0.9, not 1, so D cannot become over-confident and G keeps
                        getting useful gradients. Only the real side: smoothing fakes would
                        reward G for staying where fakes are. The seeds use 0.8.
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

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minigen.checkpoint import load_checkpoint, restore, save_checkpoint
from minigen.cli import DATA_HELP, DataConfig, add_config_args, config_from_args, resumed_config, run
from minigen.data import batch_indices, load_dataset
from minigen.dcgan import PRESETS, SIZES, Discriminator, Generator, discriminator_targets, preset
from minigen.diffaug import diff_augment
from minigen.ema import EMA
from minigen.errors import MinigenError
from minigen.images import save_grid
from minigen.runlog import MetricsLog
from minigen.runtime import GracefulStop, count_flops, pick_device, progress_bar, seed_everything
from minigen.unet import count_parameters


@dataclass
class GANTrainConfig(DataConfig):        # dataset, image_size, channels, data_root, download, flip
    preset: str = "cpu"
    steps: int = 5000
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.999
    real_label: float = 0.9
    flip_prob: float = 0.05
    diffaug: str = "translation"
    seed: int = 0
    out: str = "runs/gan"
    resume: bool = False
    stop_after: int | None = None
    compile: bool = False
    amp: bool = False
    device: str | None = None
    sample_every: int = 500
    ckpt_every: int = 250
    log_every: int = 10


HELP = {
    **DATA_HELP,
    "image_size": f"resize images to SIZE x SIZE, one of {SIZES} (required for folder:PATH)",
    "preset": f"network size: {' | '.join(PRESETS)}",
    "steps": "total steps (one D update and one G update each) of the run",
    "batch_size": "real images per step",
    "lr_g": "Adam learning rate of G (Radford et al.: 2e-4)",
    "lr_d": "Adam learning rate of D (Radford et al.: 2e-4)",
    "beta1": "Adam β1 (Radford et al.: 0.5, for stability)",
    "beta2": "Adam β2",
    "ema_decay": "largest EMA decay of G's weights (0: no EMA); samples and checkpoints use the EMA G",
    "real_label": "D's target for real images: one-sided label smoothing (1: off; the seeds use 0.8)",
    "flip_prob": "probability of swapping an image's real/fake target in D's update (0: off)",
    "diffaug": "DiffAugment policies for D's inputs, comma-separated: color,translation,cutout ('': off)",
    "seed": "random seed: same seed, same run",
    "out": "output folder (checkpoints go to OUT/last.pt)",
    "resume": "continue from OUT/last.pt",
    "stop_after": "stop after this many steps of this invocation, with a checkpoint",
    "compile": "torch.compile G and D (the plain modules are what gets saved)",
    "amp": "bf16 autocast (CUDA only)",
    "device": "cpu | cuda | mps (default: the best available)",
    "sample_every": "write a fixed-noise sample grid every N steps (0: only at the end)",
    "ckpt_every": "save OUT/last.pt every N steps (and always at the end)",
    "log_every": "append a line to OUT/metrics.jsonl every N steps",
}
CHOICES = {"preset": list(PRESETS)}
RUNTIME_FIELDS = {"steps", "out", "resume", "stop_after", "compile", "amp", "device", "sample_every",
                  "ckpt_every", "log_every", "data_root", "download"}
D_COLLAPSE_LOSS, D_COLLAPSE_STEPS, DIVERSITY_FLOOR, DIVERSITY_FROM = 0.05, 200, 0.25, 500


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Average L2 distance between the images of a batch: near 0 when G makes one image for all z."""
    flat = x.flatten(1).float()
    d = torch.cdist(flat, flat)
    n = len(flat)
    return (d.sum() / (n * (n - 1))).item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, GANTrainConfig, HELP, CHOICES)
    cfg = config_from_args(GANTrainConfig, parser.parse_args(argv))
    device, reason = pick_device(cfg.device)
    print(f"device: {reason}")

    # ---- resume: the checkpoint's settings define the run ---------------------------------
    out_dir = Path(cfg.out)
    ckpt_path = out_dir / "last.pt"
    state = None
    if cfg.resume:
        state = load_checkpoint(ckpt_path, kind="gan")
        saved = state["extra"]["train"]
        cfg = resumed_config(GANTrainConfig, cfg, saved, RUNTIME_FIELDS)
        print(f"resuming {ckpt_path} at step {state['step']} with its saved settings")
    elif ckpt_path.exists():
        raise MinigenError(f"{ckpt_path} exists: pass --resume to continue that run, or --out DIR for a new one")
    if cfg.amp and device.type != "cuda":
        print(f"note: --amp (bf16 autocast) is for CUDA; training in fp32 on {device.type}")
    diff_augment(torch.zeros(1, 1, 8, 8), cfg.diffaug)          # an unknown policy fails here, not at step 1
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size, channels=cfg.channels,
                        seed=cfg.seed, download_missing=cfg.download)
    C, H, W = data.shape
    if H != W or H not in SIZES:
        raise MinigenError(f"the DCGAN makes square images of {SIZES} pixels; {cfg.dataset} gives {H}x{W}: "
                           "pass --image-size")
    conditional = len(data.classes) > 1
    print(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}, "
          + (f"{len(data.classes)} classes (class-conditional)" if conditional else "unconditional"))

    # ---- G, D, optimizers, EMA ----------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=H, num_classes=len(data.classes) if conditional else 0)
    G, D = Generator(model_cfg).to(device), Discriminator(model_cfg).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    ema = EMA(G, max_decay=cfg.ema_decay, power=3 / 4)
    y1 = torch.zeros(1, dtype=torch.long, device=device) if conditional else None
    g_flops = count_flops(G.eval(), torch.zeros(1, model_cfg.z_dim, device=device), y1)
    d_flops = count_flops(D.eval(), torch.zeros(1, C, H, W, device=device), y1)
    print(f"model: DCGAN '{cfg.preset}': G {count_parameters(G) / 1e6:.2f}M parameters, {g_flops / 1e6:.1f} MFLOP; "
          f"D {count_parameters(D) / 1e6:.2f}M parameters, {d_flops / 1e6:.1f} MFLOP per {H}x{W} image")
    print(f"config: {dataclasses.asdict(cfg)}")
    print(f"model config: {dataclasses.asdict(model_cfg)}")

    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_fixed = 4 * len(data.classes) if conditional else 40
    fixed_z = torch.randn(n_fixed, model_cfg.z_dim, generator=g)
    fixed_labels = torch.arange(n_fixed) % len(data.classes)
    start_step = 0
    if state is not None:
        start_step = restore(state, G, model_cfg, ema, opt_g, others={"discriminator": D, "optimizer_d": opt_d})
    fixed_z, fixed_labels = fixed_z.to(device), fixed_labels.to(device)
    real_diversity = mean_pairwise_distance(data.batch(torch.arange(min(len(data), n_fixed)))[0])

    net_g, net_d = (torch.compile(G), torch.compile(D)) if cfg.compile else (G, D)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    log = MetricsLog(out_dir / "metrics.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)

    def checkpoint(step: int) -> Path:
        return save_checkpoint(ckpt_path, kind="gan", config=model_cfg, model=G, step=step, ema=ema,
                               optimizer=opt_g, others={"discriminator": D, "optimizer_d": opt_d},
                               extra={"train": dataclasses.asdict(cfg), "classes": list(data.classes)})

    def fixed_samples(step: int) -> float:
        """Write the EMA generator's samples of the fixed noise; return their diversity."""
        with torch.no_grad():
            x = ema.model(fixed_z, fixed_labels if conditional else None)
        captions = [data.classes[i][:8] for i in fixed_labels.tolist()] if conditional else None
        save_grid(x, out_dir / "samples" / f"step_{step:06d}.png", nrow=len(data.classes) if conditional else 10,
                  captions=captions)
        return mean_pairwise_distance(x)

    # ---- training loop --------------------------------------------------------------------
    step, d_low_since = start_step, None
    end_step = cfg.steps if cfg.stop_after is None else min(cfg.steps, start_step + cfg.stop_after)
    bar = progress_bar(total=cfg.steps, initial=start_step, desc="train", dynamic_ncols=True)
    tick, seen = time.perf_counter(), 0
    try:
        with GracefulStop(say=bar.write) as stop:
            while step < end_step:
                G.train(), D.train()
                idx = batch_indices(step, len(data), cfg.batch_size, cfg.seed)
                real, y = data.batch(idx, flip=cfg.flip)
                real, y = real.to(device), y.to(device)
                B = len(real)
                labels = y if conditional else None
                z = torch.randn(B, model_cfg.z_dim, device=device)
                fake_labels = torch.randint(0, len(data.classes), (B,), device=device) if conditional else None

                # (1) Update D: maximise log D(x) + log(1 − D(G(z))), i.e. minimise
                #     BCE(D(x), real_label) + BCE(D(G(z)), 0), with a few targets swapped.
                target_real, target_fake = discriminator_targets(B, cfg.real_label, cfg.flip_prob, device)
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
                    loss_g = F.binary_cross_entropy_with_logits(logits.float(), torch.ones(B, device=device))
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()                       # D's parameters get gradients too; opt_d never sees them
                opt_g.step()
                ema.update(G)
                step += 1
                seen += B

                # ---- watch for the failure modes ----------------------------------------------------
                if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                    bar.close()
                    raise MinigenError(f"the losses became D {loss_d.item()}, G {loss_g.item()} at step {step - 1}; "
                                       f"stopping without saving (the last good checkpoint, if any, is {ckpt_path}); "
                                       "try lower learning rates")
                if loss_d.item() < D_COLLAPSE_LOSS:
                    d_low_since = step if d_low_since is None else d_low_since
                    if step - d_low_since == D_COLLAPSE_STEPS:
                        bar.write(f"warning: D's loss has stayed below {D_COLLAPSE_LOSS} for {D_COLLAPSE_STEPS} steps "
                                  f"(now {loss_d.item():.4f}, G's {loss_g.item():.2f}): D is winning and G's gradients "
                                  "are vanishing; try --diffaug translation,cutout or a smaller --lr-d")
                else:
                    d_low_since = None

                # ---- progress: bar, log, pictures, checkpoint -------------------------------------
                if step % cfg.log_every == 0 or step == end_step:
                    now = time.perf_counter()
                    images_per_s, tick, seen = seen / (now - tick), now, 0
                    d_real, d_fake = torch.sigmoid(logits_real).mean().item(), torch.sigmoid(logits_fake).mean().item()
                    bar.set_postfix(D=f"{loss_d.item():.3f}", G=f"{loss_g.item():.3f}", img_s=f"{images_per_s:.0f}")
                    log.write(step, loss_d=loss_d.item(), loss_g=loss_g.item(), d_real=d_real, d_fake=d_fake,
                              images_per_s=images_per_s)
                bar.update(1)
                if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
                    diversity = fixed_samples(step)
                    if step >= DIVERSITY_FROM and diversity < DIVERSITY_FLOOR * real_diversity:
                        bar.write(f"warning: possible mode collapse at step {step}: fixed-noise samples are "
                                  f"{diversity:.2f} apart on average, real images {real_diversity:.2f} "
                                  f"({diversity / real_diversity:.0%})")
                if step % cfg.ckpt_every == 0 and step < end_step:
                    checkpoint(step)
                if stop.asked:
                    bar.close()
                    print(f"stopped at step {step}: saved {checkpoint(step)}; continue with --resume --out {cfg.out}")
                    return 130
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped at once during step {step + 1}; the last saved checkpoint is {ckpt_path}")
        return 130
    bar.close()
    checkpoint(step)
    if step < cfg.steps:
        print(f"stopped at step {step} of {cfg.steps} (--stop-after): saved {ckpt_path}; continue with --resume")
        return 0

    # ---- final pictures -------------------------------------------------------------------
    rows = len(data.classes) if conditional else 8
    z = torch.randn(rows * 10, model_cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
    y = torch.arange(rows, device=device).repeat_interleave(10) if conditional else None
    with torch.no_grad():
        x = ema.model(z, y)
    grid = save_grid(x, out_dir / "samples.png", nrow=10, row_labels=[c[:10] for c in data.classes] if conditional else None)
    print(f"wrote {grid}; fixed-noise diversity {fixed_samples(step) / real_diversity:.0%} of the real images'")
    print(f"checkpoint: {ckpt_path}; sample more with: python sample.py --ckpt {ckpt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
