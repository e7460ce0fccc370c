"""Train the tiny Vision Transformer (Dosovitskiy et al. 2020) as a classifier, and as minigen's judge.

    python train_vit.py                                   # built-in glyphs, ~8 min on 2 CPU cores
    python train_vit.py --dataset mnist --download        # real MNIST
    python train_vit.py --dataset cifar10 --preset small --steps 20000 --flip
    python train_vit.py --noisy --out runs/vit-noisy       # a noise-aware classifier for classifier guidance

evaluate.py uses the trained ViT to judge generated images: its accuracy on class-conditional
samples, and its penultimate features for Fréchet distance and precision/recall.

Writes into --out (default runs/vit): last.pt (with the test accuracy), metrics.jsonl and
attention.png (test images, and where the [CLS] token looks in each layer).
"""

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from minigen.checkpoint import save_checkpoint
from minigen.cli import DATA_HELP, DataConfig, add_config_args, config_from_args, run
from minigen.data import batch_indices, load_dataset
from minigen.diffaug import translation
from minigen.diffusion import Diffusion
from minigen.errors import MinigenError
from minigen.images import save_grid
from minigen.lr import warmup_cosine
from minigen.runlog import MetricsLog
from minigen.runtime import GracefulStop, count_flops, pick_device, progress_bar, seed_everything
from minigen.schedules import make_betas
from minigen.unet import count_parameters
from minigen.vit import PRESETS, ViT, preset


@dataclass
class ViTTrainConfig(DataConfig):        # dataset, image_size, channels, data_root, download, flip
    shift: float = 0.07
    preset: str = "cpu"
    steps: int = 3500
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    noisy: bool = False
    noise_schedule: str = "linear"
    noise_T: int = 1000
    seed: int = 0
    out: str = "runs/vit"
    device: str | None = None
    eval_every: int = 1000
    log_every: int = 20


HELP = {
    **DATA_HELP,
    "shift": "random translation of training images by up to this fraction of their size (0: off)",
    "preset": f"ViT size: {' | '.join(PRESETS)}",
    "steps": "optimizer steps",
    "batch_size": "images per step",
    "lr": "peak AdamW learning rate",
    "warmup": "linear warm-up steps, then cosine decay to 0",
    "weight_decay": "AdamW weight decay",
    "label_smoothing": "cross-entropy label smoothing (Szegedy et al. 2016)",
    "noisy": "train on images noised by the diffusion forward process at random t, for classifier "
             "guidance (Dhariwal & Nichol 2021): sample.py --classifier OUT/last.pt",
    "noise_schedule": "β schedule of the noising with --noisy: match the diffusion model's",
    "noise_T": "number of diffusion steps of the noising with --noisy: match the diffusion model's",
    "seed": "random seed",
    "out": "output folder (the checkpoint goes to OUT/last.pt)",
    "device": "cpu | cuda | mps (default: the best available)",
    "eval_every": "measure accuracy on 2,000 test images every N steps",
    "log_every": "append a line to OUT/metrics.jsonl every N steps",
}


@torch.no_grad()
def evaluate(model, data, device, limit: int | None = None, batch: int = 500) -> float:
    """Top-1 accuracy on (the first `limit` images of) a data set."""
    model.eval()
    n = min(len(data), limit or len(data))
    correct = 0
    for start in range(0, n, batch):
        x, y = data.batch(torch.arange(start, min(n, start + batch)))
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / n


def attention_picture(model, data, device, path: Path, n: int = 8) -> Path:
    """Rows: n test images, then for each layer the [CLS] attention over the patches, upsampled."""
    x, _ = data.batch(torch.arange(n))
    maps = model.attention_maps(x.to(device)).cpu()                        # (depth, n, H/P, W/P)
    H, W = x.shape[-2:]
    maps = F.interpolate(maps.flatten(0, 1)[:, None], size=(H, W), mode="nearest")  # (depth·n, 1, H, W)
    peak = maps.flatten(1).amax(1).clamp_min(1e-8)[:, None, None, None]
    maps = (maps / peak) * 2 - 1                                           # each map scaled to [-1, 1]
    rows = torch.cat([x.mean(1, keepdim=True), maps])                      # images shown in gray
    labels = ["input"] + [f"layer {i + 1}" for i in range(model.config.depth)]
    return save_grid(rows, path, nrow=n, row_labels=labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, ViTTrainConfig, HELP, {"preset": list(PRESETS), "noise_schedule": ["linear", "cosine", "sigmoid"]})
    cfg = config_from_args(ViTTrainConfig, parser.parse_args(argv))
    device, reason = pick_device(cfg.device)
    print(f"device: {reason}")
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    kw = {"root": cfg.data_root, "size": cfg.image_size, "channels": cfg.channels, "seed": cfg.seed,
          "download_missing": cfg.download}
    train = load_dataset(cfg.dataset, "train", **kw)
    test = load_dataset(cfg.dataset, "test", **kw) if not cfg.dataset.startswith("folder:") else None
    if test is None:   # a folder has one split: hold out every 10th image
        held = torch.arange(len(train)) % 10 == 0
        test = dataclasses.replace(train, images=train.images[held], labels=train.labels[held])
        train = dataclasses.replace(train, images=train.images[~held], labels=train.labels[~held])
    C, H, W = train.shape
    if len(train.classes) < 2:
        raise MinigenError(f"{cfg.dataset} has one class; a classifier needs at least two (use subfolders)")
    print(f"data: {cfg.dataset}, {len(train)} train / {len(test)} test images of {C}x{H}x{W}, {len(train.classes)} classes")

    # ---- model, optimizer -----------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W), num_classes=len(train.classes),
                       time_conditioned=cfg.noisy)
    model = ViT(model_cfg).to(device)
    flops = count_flops(model, torch.zeros(1, C, H, W, device=device))
    print(f"model: ViT '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters, "
          f"{flops / 1e6:.1f} MFLOP per image; {model.grid[0] * model.grid[1]} patches of {model_cfg.patch_size}x{model_cfg.patch_size}")
    print(f"config: {dataclasses.asdict(cfg)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    out_dir = Path(cfg.out)
    log = MetricsLog(out_dir / "metrics.jsonl")
    noising = Diffusion(make_betas(cfg.noise_schedule, cfg.noise_T)) if cfg.noisy else None

    def checkpoint(step: int, accuracy: float | None) -> Path:
        return save_checkpoint(out_dir / "last.pt", kind="vit", config=model_cfg, model=model, step=step,
                               optimizer=optimizer, scheduler=scheduler,
                               extra={"train": dataclasses.asdict(cfg), "classes": list(train.classes),
                                      "test_accuracy": accuracy})

    # ---- training loop --------------------------------------------------------------------
    bar = progress_bar(total=cfg.steps, desc="train", dynamic_ncols=True)
    tick, seen, step = time.perf_counter(), 0, 0
    with GracefulStop(say=bar.write) as stop:
        while step < cfg.steps:
            model.train()
            x, y = train.batch(batch_indices(step, len(train), cfg.batch_size, cfg.seed), flip=cfg.flip)
            x, y = x.to(device), y.to(device)
            if cfg.shift:
                x = translation(x, cfg.shift)                               # light augmentation
            t = None
            if noising is not None:                                         # x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
                t = torch.randint(0, noising.T, (len(x),), device=device)
                x = noising.q_sample(x, t)
            loss = F.cross_entropy(model(x, t), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(x)
            bar.update(1)
            if step % cfg.log_every == 0:
                now = time.perf_counter()
                images_per_s, tick, seen = seen / (now - tick), now, 0
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{images_per_s:.0f}")
                log.write(step, loss=loss.item(), lr=scheduler.get_last_lr()[0], images_per_s=images_per_s)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                accuracy = evaluate(model, test, device, limit=2000)
                bar.write(f"step {step}: test accuracy {accuracy:.2%} (first 2,000 test images)")
                log.write(step, test_accuracy_2k=accuracy)
            if stop.asked:
                break
    bar.close()

    # ---- test accuracy, checkpoint, attention maps ------------------------------------------
    accuracy = evaluate(model, test, device)
    log.write(step, test_accuracy=accuracy)
    path = checkpoint(step, accuracy)
    picture = attention_picture(model, test, device, out_dir / "attention.png")
    print(f"test accuracy {accuracy:.2%} on {len(test)} images after {step} steps")
    print(f"wrote {path} and {picture}")
    return 130 if stop.asked else 0


if __name__ == "__main__":
    sys.exit(run(main))
