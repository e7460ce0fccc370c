"""Train a denoising diffusion model (DDPM, Ho et al. 2020) on pixels with a U-Net, written out step by step.

    python train_ddpm.py                                  # class-conditional digits (built-in glyphs), CPU
    python train_ddpm.py --dataset shapes --steps 3000    # the built-in RGB shapes
    python train_ddpm.py --dataset folder:~/cars --image-size 64 --preset cifar --amp --compile
    python train_ddpm.py --resume                         # continue runs/ddpm/last.pt to --steps
    torchrun --nproc_per_node 2 train_ddpm.py ...         # DistributedDataParallel, one process per device

Writes into --out (default runs/ddpm): last.pt (checkpoint), metrics.jsonl, forward.png (the
forward process on one image), samples/step_NNNNNN.png and strips/step_NNNNNN.png (guided
samples from fixed noise and the reverse process of one of them, at every --sample-every
steps), and at the end samples.png (a row per class) and reverse.png.

A data set with classes trains a class-conditional model (a label embedding, dropped to the
null label with --cond-drop so classifier-free guidance works); one without, an unconditional
one. Latent diffusion and text to image are train_ldm.py.

Ctrl-C saves a checkpoint and stops; --resume continues bit for bit (on CPU).
"""

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial

import torch

from minigen.cli import refuse_moved, run, setting
from minigen.data import batch_indices, load_dataset
from minigen.device import seed_everything
from minigen.diffusion import Diffusion, DiffusionConfig
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.models.unet import UNet, preset
from minigen.pipelines import DiffusionPipeline
from minigen.training.diffusion_run import (DiffusionTrainConfig, attention_sizes, check_settings, final_pictures,
                                            forward_picture, preview_pictures)
from minigen.training.ema import EMA
from minigen.training.lifecycle import Run
from minigen.training.lr import warmup_cosine

LDM = "latent diffusion and text conditioning are train_ldm.py's now: python train_ldm.py --autoencoder VAE_CKPT ..."
MOVED = {"--autoencoder": LDM, "--condition": LDM, "--text-encoder": LDM, "--freeze-text": LDM}


@dataclass
class TrainConfig(DiffusionTrainConfig):
    out: str = setting("runs/ddpm", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)


# ---- the step ---------------------------------------------------------------------------------

def train_step(model, net, diffusion: Diffusion, optimizer, ema: EMA, batch, cfg):
    """One step of Ho et al.'s Algorithm 1: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at a random t, the loss
    ‖target − f_θ(x_t, t)‖² (target ε in the paper; v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 by default here),
    a gradient step, the EMA update. `net` is `model` as it runs (compiled,
    DistributedDataParallel). No value is read on the host here: tests run it on the meta device."""
    x0, cond = batch                      # cond: the network's keyword arguments ({"y": labels}, or {})
    # condition dropout: the model also learns p(x), for classifier-free guidance
    cond = model.drop_condition(cfg.cond_drop, **cond) if cond else {}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and x0.device.type == "cuda"):
        loss = diffusion.loss(net, x0, min_snr_gamma=cfg.min_snr or None, **cond)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    optimizer.step()
    ema.update(model)
    return loss.detach(), grad_norm


def main(argv=None) -> int:
    refuse_moved(argv, MOVED)
    run_ = Run.from_command_line(TrainConfig, "ddpm", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    if run_.state is not None and "latent" in run_.state["extra"]:
        raise MinigenError(f"{run_.ckpt_path} is a latent diffusion run: continue it with "
                           f"python train_ldm.py --resume --out {cfg.out}")
    if run_.state is not None and "tokenizer" in run_.state["extra"]:
        raise MinigenError(f"{run_.ckpt_path} is a text-conditional pixel run, which minigen no longer trains "
                           "(sample.py still samples it); text to image is train_ldm.py --condition text")
    check_settings(cfg, device)
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = cfg.select(load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size,
                                   channels=cfg.channels, seed=cfg.seed, download_missing=cfg.download and run_.main))
    C, H, W = data.shape
    K = len(data.classes) if len(data.classes) > 1 else 0           # classes the model is told (0: unconditional)
    say(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}, "
        + (f"{K} classes (class-conditional)" if K else "unconditional"))

    # ---- model, diffusion, optimizer, EMA ---------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, num_classes=K, image_size=(H, W),
                       **({"dropout": cfg.dropout} if cfg.dropout is not None else {}))
    if cfg.attention:
        model_cfg = dataclasses.replace(model_cfg, attention_resolutions=attention_sizes(cfg.attention, model_cfg))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    try:
        model = UNet(model_cfg).to(device).to(memory_format=memory_format)
    except ValueError as e:                   # a size the U-Net's levels cannot halve: the model says why
        raise MinigenError(f"--preset {cfg.preset} at {H}x{W}: {e}") from None
    diffusion_cfg = DiffusionConfig(cfg.schedule, cfg.T, cfg.prediction)
    diffusion = Diffusion.from_config(diffusion_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    y1 = torch.zeros(1, dtype=torch.long, device=device)
    flops = count_flops(model, torch.zeros(1, C, H, W, device=device), y1, y1 if K else None)
    say(f"model: U-Net '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{flops / 1e9:.3f} GFLOP per {H}x{W} image forward")
    say(f"config: {dataclasses.asdict(cfg)}")
    say(f"model config: {dataclasses.asdict(model_cfg)}")

    # fixed noise and labels for the progress pictures: two of each class (or 20 unconditional)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_preview = 2 * K if K else 20
    fixed_labels = torch.arange(n_preview) % K if K else torch.zeros(n_preview, dtype=torch.long)
    fixed_noise = torch.randn(n_preview, C, H, W, generator=g)
    if run_.state is not None:
        fixed_noise, fixed_labels = run_.state["extra"]["fixed_noise"], run_.state["extra"]["fixed_labels"]
    start = run_.attach(model, model_cfg, ema=ema, optimizer=optimizer, scheduler=scheduler,
                        extra={"diffusion": dataclasses.asdict(diffusion_cfg), "classes": list(data.classes),
                               "fixed_noise": fixed_noise, "fixed_labels": fixed_labels},
                        classes=list(data.classes) if K else [])
    pipe = DiffusionPipeline(ema.model, diffusion, list(data.classes))          # samples: the EMA weights
    preview = pipe.condition(fixed_labels)
    names = [data.classes[i][:8] for i in fixed_labels.tolist()] if K else None
    net = run_.wrap(model)
    net = torch.compile(net, mode="reduce-overhead" if cfg.cuda_graphs else "default") if cfg.compile else net
    if run_.main and start == 0:
        forward_picture(run_, pipe, data.batch(torch.tensor([0]))[0][0], g)

    # ---- training loop: Ho et al. Algorithm 1 ------------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            index = batch_indices(step, len(data), cfg.batch_size, cfg.seed, run_.rank, run_.world)
            x0, y = data.batch(index, flip=cfg.flip)
            x0 = x0.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            if cfg.cuda_graphs:                   # a new iteration: the last step's graph outputs are done with
                torch.compiler.cudagraph_mark_step_begin()
            loss, grad_norm = train_step(model, net, diffusion, optimizer, ema, (x0, pipe.condition(y)), cfg)
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)

            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0], grad_norm=grad_norm.item())
            if run_.main and run_.due(cfg.sample_every, last=False):
                preview_pictures(run_, pipe, fixed_noise.to(device), preview, cfg, step + 1, captions=names)
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- final pictures: a row per class ------------------------------------------------------
    if run_.main:
        rows = K or 4
        labels = torch.arange(rows).repeat_interleave(10) if K else None
        noise = torch.randn(rows * 10, C, H, W, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        final_pictures(run_, pipe, noise, pipe.condition(labels), cfg,
                       row_labels=[c[:10] for c in data.classes] if K else None)
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
