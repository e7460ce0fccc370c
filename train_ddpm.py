"""Train a denoising diffusion model (DDPM, Ho et al. 2020) with a U-Net, written out step by step.

    python train_ddpm.py                                  # class-conditional digits (built-in glyphs), CPU
    python train_ddpm.py --dataset shapes --steps 3000    # the built-in RGB shapes
    python train_ddpm.py --dataset folder:~/cars --image-size 64 --preset cifar --amp --compile
    python train_ddpm.py --resume                         # continue runs/ddpm/last.pt to --steps
    torchrun --nproc_per_node 2 train_ddpm.py ...         # DistributedDataParallel, one process per device

Writes into --out (default runs/ddpm): last.pt (checkpoint), metrics.jsonl, forward.png (the
forward process on one image), samples/step_NNNNNN.png and strips/step_NNNNNN.png (guided
samples from fixed noise and the reverse process of one of them, at every --sample-every
steps), and at the end samples.png (a row per class) and reverse.png.

Ctrl-C saves a checkpoint and stops; --resume continues bit for bit (on CPU).
"""

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from minigen.checkpoint import load_checkpoint, restore, save_checkpoint
from minigen.cli import DATA_HELP, DataConfig, add_config_args, config_from_args, resumed_config, run
from minigen.data import batch_indices, load_dataset
from minigen.diffusion import Diffusion
from minigen.ema import EMA
from minigen.errors import MinigenError
from minigen.images import save_grid, save_strip
from minigen.lr import warmup_cosine
from minigen.runlog import MetricsLog
from minigen.runtime import GracefulStop, count_flops, pick_device, progress_bar, resident_memory_mib, seed_everything
from minigen.schedules import make_betas
from minigen.unet import PRESETS, UNet, count_parameters, preset


@dataclass
class TrainConfig(DataConfig):        # dataset, image_size, channels, data_root, download, flip
    preset: str = "cpu"
    dropout: float | None = None
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "linear"
    T: int = 1000
    prediction: str = "eps"
    min_snr: float = 5.0
    cond_drop: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    out: str = "runs/ddpm"
    resume: bool = False
    stop_after: int | None = None
    compile: bool = False
    channels_last: bool = True
    amp: bool = False
    device: str | None = None
    sample_every: int = 500
    ckpt_every: int = 250
    log_every: int = 10
    sample_steps: int = 50
    guidance: float = 3.0


HELP = {
    **DATA_HELP,
    "preset": f"U-Net size: {' | '.join(PRESETS)}",
    "dropout": "dropout in the U-Net's ResBlocks (default: the preset's, 0.1; 0 trains about 1.1x faster "
               "on a CPU, README Performance)",
    "steps": "total optimizer steps of the run (a resumed run stops at the same step)",
    "batch_size": "images per step (per process under torchrun)",
    "lr": "peak AdamW learning rate",
    "warmup": "linear learning-rate warm-up steps, then cosine decay to 0",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "clip the gradient's global norm to this (0: off)",
    "schedule": "β schedule: linear | cosine | sigmoid",
    "T": "number of diffusion steps",
    "prediction": "what the network predicts: eps (noise) | x0 (clean image) | v (velocity)",
    "min_snr": "min-SNR-γ loss weighting, Hang et al. 2023 (0: off)",
    "cond_drop": "probability of replacing the label by 'null', so the model also learns the "
                 "unconditional score for classifier-free guidance",
    "ema_decay": "largest EMA decay (it warms up from 0); samples use the EMA weights",
    "seed": "random seed: same seed, same run",
    "out": "output folder (checkpoints go to OUT/last.pt)",
    "resume": "continue from OUT/last.pt",
    "stop_after": "stop after this many steps of this invocation, with a checkpoint (split a run into chunks)",
    "compile": "torch.compile the model for training (the plain module is what gets saved)",
    "channels_last": "keep activations in NHWC memory layout (faster convolutions on CPU and GPU)",
    "amp": "bf16 autocast (CUDA only)",
    "device": "cpu | cuda | cuda:1 | mps (default: the best available)",
    "sample_every": "write a sample grid and reverse-diffusion strip every N steps (0: only at the end)",
    "ckpt_every": "save OUT/last.pt every N steps (and always at the end)",
    "log_every": "append a line to OUT/metrics.jsonl every N steps",
    "sample_steps": "DDIM steps for the progress samples",
    "guidance": "classifier-free guidance scale w for the progress samples (1: none)",
}
CHOICES = {"preset": list(PRESETS), "schedule": ["linear", "cosine", "sigmoid"], "prediction": ["eps", "x0", "v"]}
# Settings that only change how this invocation runs, not what is trained: on --resume they
# come from the command line; everything else comes from the checkpoint.
RUNTIME_FIELDS = {"steps", "out", "resume", "stop_after", "compile", "channels_last", "amp", "device", "sample_every",
                  "ckpt_every", "log_every", "sample_steps", "guidance", "data_root", "download"}


def sample_previews(ema_model, diffusion, fixed_noise, fixed_labels, cfg, null_label, classes, out_dir, step):
    """Guided DDIM samples from fixed noise and labels, and the reverse process of the first one."""
    labels = fixed_labels if null_label is not None else None
    x, inter = diffusion.sample(ema_model, fixed_noise.shape, sampler="ddim", steps=cfg.sample_steps,
                                x_T=fixed_noise, y=labels, guidance=cfg.guidance, null_label=null_label,
                                return_intermediates=True, progress=False)
    captions = [classes[i][:8] for i in fixed_labels.tolist()] if labels is not None else None
    grid = save_grid(x, out_dir / "samples" / f"step_{step:06d}.png", nrow=10, captions=captions)
    picks = torch.linspace(0, len(inter["t"]) - 1, 10).round().long()      # 10 evenly spaced steps
    frames = torch.cat([fixed_noise[:1].cpu(), inter["x_t"][picks, 0]])     # (11, C, H, W)
    ts = [cfg.T] + [inter["t"][i] - 1 if i < len(inter["t"]) - 1 else 0 for i in picks.tolist()]
    strip = save_strip(frames, out_dir / "strips" / f"step_{step:06d}.png", captions=[f"t={t}" for t in ts])
    return grid, strip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, TrainConfig, HELP, CHOICES)
    cfg = config_from_args(TrainConfig, parser.parse_args(argv))

    # ---- processes and device -------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(cfg.device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    main_process = rank == 0
    say = print if main_process else (lambda *a, **k: None)
    device, reason = pick_device(cfg.device)
    say(f"device: {reason}" + (f"; {world} processes ({dist.get_backend()})" if world > 1 else ""))

    # ---- resume: the checkpoint's settings define the run ---------------------------------
    out_dir = Path(cfg.out)
    ckpt_path = out_dir / "last.pt"
    state = None
    if cfg.resume:
        state = load_checkpoint(ckpt_path, kind="ddpm")
        saved = state["extra"]["train"]
        cfg = resumed_config(TrainConfig, cfg, saved, RUNTIME_FIELDS)
        say(f"resuming {ckpt_path} at step {state['step']} with its saved settings")
    elif ckpt_path.exists():
        raise MinigenError(f"{ckpt_path} exists: pass --resume to continue that run, or --out DIR for a new one")
    if cfg.amp and device.type != "cuda":
        say(f"note: --amp (bf16 autocast) is for CUDA; training in fp32 on {device.type}")
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size, channels=cfg.channels,
                        seed=cfg.seed, download_missing=cfg.download and main_process)
    C, H, W = data.shape
    conditional = len(data.classes) > 1
    say(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}, "
        + (f"{len(data.classes)} classes (class-conditional)" if conditional else "unconditional"))

    # ---- model, diffusion, optimizer, EMA ---------------------------------------------------
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise MinigenError(f"--dropout {cfg.dropout}: must be in [0, 1)")
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W),
                       num_classes=len(data.classes) if conditional else 0,
                       **({"dropout": cfg.dropout} if cfg.dropout is not None else {}))
    model = UNet(model_cfg).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    null_label = model_cfg.num_classes if conditional else None
    diffusion = Diffusion(make_betas(cfg.schedule, cfg.T), prediction=cfg.prediction)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    example = (torch.zeros(1, C, H, W, device=device), torch.zeros(1, dtype=torch.long, device=device))
    flops = count_flops(model, *example, torch.zeros(1, dtype=torch.long, device=device) if conditional else None)
    say(f"model: U-Net '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{flops / 1e9:.3f} GFLOP per {H}x{W} image forward")
    say(f"config: {dataclasses.asdict(cfg)}")
    say(f"model config: {dataclasses.asdict(model_cfg)}")

    g = torch.Generator().manual_seed(cfg.seed + 1)     # fixed noise and labels for progress pictures
    n_preview = 2 * len(data.classes) if conditional else 20
    fixed_labels = torch.arange(n_preview) % len(data.classes) if conditional else torch.zeros(n_preview, dtype=torch.long)
    fixed_noise = torch.randn(n_preview, C, H, W, generator=g)
    start_step = 0
    if state is not None:
        start_step = restore(state, model, model_cfg, ema, optimizer, scheduler)
        fixed_noise, fixed_labels = state["extra"]["fixed_noise"], state["extra"]["fixed_labels"]
    fixed_noise, fixed_labels = fixed_noise.to(device), fixed_labels.to(device)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")

    log = MetricsLog(out_dir / "metrics.jsonl", enabled=main_process)

    def checkpoint(step: int) -> Path | None:
        if not main_process:
            return None
        return save_checkpoint(ckpt_path, kind="ddpm", config=model_cfg, model=model, step=step, ema=ema,
                               optimizer=optimizer, scheduler=scheduler,
                               extra={"train": dataclasses.asdict(cfg), "classes": list(data.classes),
                                      "fixed_noise": fixed_noise.cpu(), "fixed_labels": fixed_labels.cpu()})

    if main_process and start_step == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        frames, ts = diffusion.forward_strip(data.batch(torch.tensor([0]))[0][0], frames=10, generator=g)
        path = save_strip(frames, out_dir / "forward.png", captions=[f"t={t}" for t in ts])
        say(f"wrote {path} (the forward process on one training image)")

    # ---- training loop --------------------------------------------------------------------
    end_step = cfg.steps if cfg.stop_after is None else min(cfg.steps, start_step + cfg.stop_after)
    step = start_step
    bar = progress_bar(total=cfg.steps, initial=start_step, desc="train", disable=not main_process, dynamic_ncols=True)
    tick, seen = time.perf_counter(), 0
    # Ctrl-C asks to stop: the current step finishes, a checkpoint is saved, and the run ends.
    # A second Ctrl-C stops at once (the last saved checkpoint stays as it was).
    try:
        with GracefulStop(say=bar.write if main_process else None) as stop:
            while step < end_step:
                model.train()
                idx = batch_indices(step, len(data), cfg.batch_size, cfg.seed, rank, world)
                x0, y = data.batch(idx, flip=cfg.flip)
                x0 = x0.to(device, memory_format=memory_format, non_blocking=True)
                y = y.to(device, non_blocking=True)
                kwargs = {}
                if conditional:    # label dropout: the model also learns p(x), for classifier-free guidance
                    drop = torch.rand(len(y), device=device) < cfg.cond_drop
                    kwargs["y"] = torch.where(drop, torch.full_like(y, null_label), y)

                with autocast():
                    loss = diffusion.loss(net, x0, min_snr_gamma=cfg.min_snr or None, **kwargs)
                if not torch.isfinite(loss):
                    bar.close()
                    raise MinigenError(f"the loss became {loss.item()} at step {step}; stopping without saving "
                                       f"(the last good checkpoint, if any, is {ckpt_path}); try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
                optimizer.step()
                scheduler.step()
                ema.update(model)
                step += 1
                seen += len(x0) * world

                # ---- progress: bar, log, pictures, checkpoint -------------------------------------
                if step % cfg.log_every == 0 or step == end_step:
                    now = time.perf_counter()
                    images_per_s = seen / (now - tick)
                    tick, seen = now, 0
                    lr = scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}")
                    log.write(step, loss=loss.item(), lr=lr, grad_norm=grad_norm.item(), images_per_s=images_per_s,
                              rss_mib=round(resident_memory_mib(), 1))
                bar.update(1)
                if main_process and cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
                    sample_previews(ema.model, diffusion, fixed_noise, fixed_labels, cfg, null_label, data.classes, out_dir, step)
                if step % cfg.ckpt_every == 0 and step < end_step:
                    checkpoint(step)
                asked = torch.tensor(float(stop.asked))
                if world > 1:                  # every process stops at the same step
                    dist.all_reduce(asked, op=dist.ReduceOp.MAX)
                if asked.item():
                    bar.close()
                    path = checkpoint(step)
                    say(f"stopped at step {step}: saved {path}; continue with --resume --out {cfg.out}")
                    return 130
    except KeyboardInterrupt:
        bar.close()
        say(f"\nstopped at once during step {step + 1}; the last saved checkpoint is {ckpt_path}")
        return 130
    bar.close()
    checkpoint(step)
    if step < cfg.steps:
        say(f"stopped at step {step} of {cfg.steps} (--stop-after): saved {ckpt_path}; continue with --resume")
        return 0

    # ---- final pictures -------------------------------------------------------------------
    if main_process:
        rows = len(data.classes) if conditional else 4
        labels = torch.arange(rows).repeat_interleave(10).to(device) if conditional else None
        noise = torch.randn(rows * 10, C, H, W, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        start = time.perf_counter()
        x, inter = diffusion.sample(ema.model, noise.shape, sampler="ddim", steps=cfg.sample_steps, x_T=noise,
                                    y=labels, guidance=cfg.guidance, null_label=null_label,
                                    return_intermediates=True, progress=True)
        seconds = time.perf_counter() - start
        row_labels = [c[:10] for c in data.classes] if conditional else None
        grid = save_grid(x, out_dir / "samples.png", nrow=10, row_labels=row_labels)
        picks = torch.linspace(0, len(inter["t"]) - 1, 10).round().long()
        strip = save_strip(torch.cat([noise[:1].cpu(), inter["x_t"][picks, 0]]), out_dir / "reverse.png",
                           captions=["x_T"] + [f"step {i + 1}" for i in picks.tolist()])
        say(f"wrote {grid} (DDIM {cfg.sample_steps} steps, guidance {cfg.guidance}, {len(x) / seconds:.1f} images/s) "
            f"and {strip}")
        say(f"checkpoint: {ckpt_path}; sample more with: python sample.py --ckpt {ckpt_path}")
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
