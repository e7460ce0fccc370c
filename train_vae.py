"""Train a variational autoencoder (Kingma & Welling 2014) shaped like Stable Diffusion's
(Rombach et al. 2022), written out step by step.

    python train_vae.py                                   # built-in glyph digits, f = 4: 28x28 -> 4x7x7
    python train_vae.py --dataset fashion --out runs/vae-fashion
    python train_vae.py --dataset shapes --image-size 64 --preset f8 --out runs/vae-shapes64
    python train_vae.py --resume                          # continue runs/vae/last.pt to --steps

The encoder maps an image to a small grid of latents (mean and log-variance), z = μ + σ·ε is
drawn, and the decoder maps z back to pixels. The loss is ‖x − x̂‖₁ + β·KL(q(z|x) ‖ N(0, I))
(minigen/models/autoencoder.py): a small β keeps the latents informative (what latent diffusion
needs), a large one makes z ~ N(0, I) decode to plausible images (the VAE as a generator).

Writes into --out (default runs/vae): last.pt, metrics.jsonl (loss, reconstruction, KL, PSNR,
SSIM), and at every --sample-every steps and at the end pictures/step_NNNNNN.png: rows of
inputs and their reconstructions, then images decoded from z ~ N(0, I), then a walk in latent
space between two encoded images.
"""

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial

import torch

from minigen.cli import STEPS, at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, load_dataset
from minigen.device import seed_everything
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_parameters
from minigen.evaluation.metrics import psnr, ssim
from minigen.images import save_grid
from minigen.models.autoencoder import PRESETS, Autoencoder, preset, vae_loss
from minigen.training.ema import EMA
from minigen.training.lifecycle import Run, RunConfig
from minigen.training.lr import warmup_cosine


@dataclass
class VAETrainConfig(DataConfig, RunConfig):
    preset: str = setting("f4", "autoencoder size: f4 (28-32 px, 4x downsampling), f2 (32 px, 2x: keeps small shapes), f8 (64 px), tiny (tests)",
                          choices=PRESETS)
    latent_channels: int | None = setting(None, "latent channels c (default: the preset's, 4)", check=between(1, 64))
    beta: float = setting(1e-3, "weight of the KL term", check=non_negative)
    steps: int = setting(2000, "total optimizer steps", runtime=True, check=STEPS)
    batch_size: int = setting(64, "images per step", check=at_least(1))
    lr: float = setting(1e-3, "peak AdamW learning rate", check=positive)
    warmup: int = setting(100, "linear warm-up steps, then cosine decay to 0", check=non_negative)
    ema_decay: float = setting(0.999, "largest EMA decay; pictures and the saved model use the EMA weights",
                               check=between(0, 1))
    sample_every: int = setting(500, "write pictures every N steps (0: only at the end)", runtime=True,
                                check=non_negative)
    out: str = setting("runs/vae", "output folder", runtime=True)


@torch.no_grad()
def pictures(model: Autoencoder, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """Rows for the progress picture: inputs, their reconstructions (from μ), prior samples and
    a latent walk from the first input to the last; and the reconstructions' PSNR and SSIM."""
    mu, _ = model.encode(x)
    rec = model.decode(mu).clamp(-1, 1)
    prior = model.decode(torch.randn(mu.shape, generator=generator).to(x.device)).clamp(-1, 1)
    s = torch.linspace(0, 1, len(x), device=x.device).view(-1, 1, 1, 1)
    walk = model.decode((1 - s) * mu[:1] + s * mu[-1:]).clamp(-1, 1)     # (n, C, H, W)
    return torch.cat([x, rec, prior, walk]), psnr(rec, x), ssim(rec, x)


def main(argv=None) -> int:
    run_ = Run.from_command_line(VAETrainConfig, "vae", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = cfg.select(load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size,
                                   channels=cfg.channels, seed=cfg.seed, download_missing=cfg.download and run_.main))
    C, H, W = data.shape
    say(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}")

    # ---- model, optimizer, EMA ---------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W),
                       **({"latent_channels": cfg.latent_channels} if cfg.latent_channels else {}))
    if H % model_cfg.factor or W % model_cfg.factor:
        raise MinigenError(f"--preset {cfg.preset} shrinks images {model_cfg.factor}x; {H}x{W} does not divide by "
                           f"{model_cfg.factor}: choose another --preset or an --image-size that divides")
    model = Autoencoder(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    say(f"model: autoencoder '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{C}x{H}x{W} -> latents {'x'.join(map(str, model_cfg.latent_shape))} (f = {model_cfg.factor})")
    say(f"config: {dataclasses.asdict(cfg)}")
    run_.attach(model, model_cfg, ema=ema, optimizer=optimizer, scheduler=scheduler,
                        extra={"classes": list(data.classes)}, classes=list(data.classes))
    fixed = data.batch(torch.arange(8) * (len(data) // 8))[0].to(device)  # 8 images spread over the set

    # ---- training loop ---------------------------------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            x, _ = data.batch(batch_indices(step, len(data), cfg.batch_size, cfg.seed, run_.rank, run_.world), flip=cfg.flip)
            loss, rec, kl = vae_loss(model, x.to(device), cfg.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update(model)
            run_.check_finite("try a lower --lr", loss=loss)
            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), rec=rec.item(), kl=kl.item(), lr=scheduler.get_last_lr()[0])
            if run_.main and (run_.due(cfg.sample_every, last=False) or step + 1 == cfg.steps):
                grid, p, s = pictures(ema.model, fixed, torch.Generator().manual_seed(cfg.seed + 1))
                path = save_grid(grid, run_.out / "pictures" / f"step_{step + 1:06d}.png", nrow=8)
                run_.log(psnr=p, ssim=s)
                say(f"step {step + 1}: reconstruction PSNR {p:.2f} dB, SSIM {s:.3f}; wrote {path} "
                    "(inputs, reconstructions, prior samples, a latent walk)")
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    code = run_.exit_code
    if run_.completed:
        say(f"checkpoint: {run_.ckpt_path}")
    run_.close()
    return code


if __name__ == "__main__":
    sys.exit(run(main))
