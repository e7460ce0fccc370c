"""Train the tiny Vision Transformer (Dosovitskiy et al. 2020) as a classifier, and as minigen's judge.

    python train_vit.py                                   # built-in glyphs, ~8 min on 2 CPU cores
    python train_vit.py --dataset mnist --download        # real MNIST
    python train_vit.py --dataset cifar10 --preset small --steps 20000 --flip
    python train_vit.py --noisy --out runs/vit-noisy       # a noise-aware classifier for classifier guidance

evaluate.py uses the trained ViT to judge generated images: its accuracy on class-conditional
samples, and its penultimate features for Fréchet distance and precision/recall.

Writes into --out (default runs/vit): last.pt (with the test accuracy), metrics.jsonl and
attention.png (test images, and where the [CLS] token looks in each layer).
Ctrl-C saves a checkpoint and stops; --resume continues; torchrun runs it on several processes.
"""

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from minigen.cli import at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, train_and_test
from minigen.device import seed_everything
from minigen.diffusion import Diffusion, DiffusionConfig
from minigen.diffusion.schedules import NAMES as SCHEDULES
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.images import save_grid
from minigen.models.vit import PRESETS, ViT, preset
from minigen.training.diffaug import translation
from minigen.training.lifecycle import Run, RunConfig
from minigen.training.lr import warmup_cosine


@dataclass
class ViTTrainConfig(DataConfig, RunConfig):
    shift: float = setting(0.07, "random translation of training images by up to this fraction of their size (0: off)",
                          check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    preset: str = setting("cpu", "ViT size", choices=PRESETS)
    patch_size: int | None = setting(None, "patch size P (default: the preset's, 4; e.g. 8 for 64 px images: "
                                           "a quarter of the tokens)", check=at_least(1))
    steps: int = setting(3500, "optimizer steps", runtime=True, check=at_least(1))
    batch_size: int = setting(128, "images per step (per process under torchrun)", check=at_least(1))
    lr: float = setting(1e-3, "peak AdamW learning rate", check=positive)
    warmup: int = setting(200, "linear warm-up steps, then cosine decay to 0", check=non_negative)
    weight_decay: float = setting(0.05, "AdamW weight decay", check=non_negative)
    label_smoothing: float = setting(0.1, "cross-entropy label smoothing (Szegedy et al. 2016)", check=between(0, 1))
    noisy: bool = setting(False, "train on images noised by the diffusion forward process at random t, for classifier "
                                 "guidance (Dhariwal & Nichol 2021): sample.py --classifier OUT/last.pt")
    noise_schedule: str = setting("linear", "β schedule of the noising with --noisy: match the diffusion model's",
                                  choices=SCHEDULES)
    noise_T: int = setting(1000, "number of diffusion steps of the noising with --noisy: match the diffusion model's",
                           check=at_least(1))
    out: str = setting("runs/vit", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)
    eval_every: int = setting(1000, "measure accuracy on 2,000 test images every N steps (0: only at the end)",
                             runtime=True, check=non_negative)
    log_every: int = setting(20, "append a line to OUT/metrics.jsonl every N steps", runtime=True,
                            check=at_least(1))


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


def train_step(net, optimizer, batch, noising: Diffusion | None, cfg):
    """One step of cross-entropy on shifted (and, with --noisy, forward-noised) images. No value
    is read on the host here: tests run it on the meta device."""
    x, y = batch
    if cfg.shift:
        x = translation(x, cfg.shift)                               # light augmentation
    t = None
    if noising is not None:                                         # x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
        t = torch.randint(0, noising.T, (len(x),), device=x.device)
        x = noising.q_sample(x, t)
    loss = F.cross_entropy(net(x, t), y, label_smoothing=cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def main(argv=None) -> int:
    run_ = Run.from_command_line(ViTTrainConfig, "vit", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    kw = {"root": cfg.data_root, "size": cfg.image_size, "channels": cfg.channels, "seed": cfg.seed,
          "download_missing": cfg.download and run_.main}
    train, test = train_and_test(cfg.dataset, **kw)                 # a folder: every 10th image held out
    train, test = cfg.select(train), cfg.select(test, limit=False)
    C, H, W = train.shape
    if len(train.classes) < 2:
        raise MinigenError(f"{cfg.dataset} has one class; a classifier needs at least two (use subfolders)")
    say(f"data: {cfg.dataset}, {len(train)} train / {len(test)} test images of {C}x{H}x{W}, {len(train.classes)} classes")

    # ---- model, optimizer -----------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W), num_classes=len(train.classes),
                       time_conditioned=cfg.noisy, **({"patch_size": cfg.patch_size} if cfg.patch_size else {}))
    P = model_cfg.patch_size
    if H % P or W % P:
        raise MinigenError(f"--preset {cfg.preset} cuts images into {P}x{P} patches, which do not tile "
                           f"{H}x{W} images; choose a preset whose patch size divides {H} and {W}, or --image-size")
    model = ViT(model_cfg).to(device)
    flops = count_flops(model, torch.zeros(1, C, H, W, device=device))
    say(f"model: ViT '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters, {flops / 1e6:.1f} MFLOP per "
        f"image; {model.grid[0] * model.grid[1]} patches of {model_cfg.patch_size}x{model_cfg.patch_size}")
    say(f"config: {dataclasses.asdict(cfg)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    noising = Diffusion.from_config(DiffusionConfig(cfg.noise_schedule, cfg.noise_T)).to(device) if cfg.noisy else None
    extra = {"classes": list(train.classes), "test_accuracy": None}
    run_.attach(model, model_cfg, optimizer=optimizer, scheduler=scheduler, extra=extra, classes=list(train.classes))
    net = run_.wrap(model)

    # ---- training loop --------------------------------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            x, y = train.batch(batch_indices(step, len(train), cfg.batch_size, cfg.seed, run_.rank, run_.world),
                               flip=cfg.flip)
            loss = train_step(net, optimizer, (x.to(device), y.to(device)), noising, cfg)
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)
            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0])
            if run_.main and run_.due(cfg.eval_every, last=False):
                accuracy = evaluate(model, test, device, limit=2000)
                say(f"step {step + 1}: test accuracy {accuracy:.2%} (first 2,000 test images)")
                run_.log_file.write(step + 1, test_accuracy_2k=accuracy)
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- test accuracy, checkpoint, attention maps ------------------------------------------
    if run_.main:
        extra["test_accuracy"] = accuracy = evaluate(model, test, device)
        run_.log_file.write(run_.step, test_accuracy=accuracy)
        path = run_.save()
        picture = attention_picture(model, test, device, run_.out / "attention.png", n=min(8, len(test)))
        say(f"test accuracy {accuracy:.2%} on {len(test)} images after {run_.step} steps")
        say(f"wrote {path} and {picture}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
