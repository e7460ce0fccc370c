"""Train the tiny Vision Transformer (Dosovitskiy et al. 2020) as a classifier, and as minigen's judge.

    python train_vit.py                                   # built-in glyphs, ~8 min on 2 CPU cores
    python train_vit.py --dataset mnist --download        # real MNIST
    python train_vit.py --dataset cifar10 --preset small --steps 20000 --flip
    python train_vit.py --noisy --out runs/vit-noisy       # a noise-aware classifier for classifier guidance
    python train_vit.py --dataset captioned-shapes --attributes --stem conv --out runs/attributes
                                                          # reads every attribute: a judge of prompts

evaluate.py uses the trained ViT to judge generated images: its accuracy on class-conditional
samples, and its penultimate features for Fréchet distance and precision/recall.
With --attributes (a set whose images have named attributes: captioned-shapes) the head has one
softmax per attribute (4 shapes + 6 colours + 2 sizes + 5 positions + 3 backgrounds = 20
outputs) and the loss is the sum of their cross-entropies; `python -m minigen.evaluation.prompts
--judge` then reads back each attribute of text-to-image samples, a judge trained on real images
only, independent of any CLIP.

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

from minigen.cli import STEPS, at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, train_and_test
from minigen.device import seed_everything
from minigen.diffusion import Diffusion, DiffusionConfig
from minigen.diffusion.schedules import NAMES as SCHEDULES
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.images import save_grid
from minigen.models.vit import PRESETS, ViT, preset, read_groups
from minigen.training.diffaug import translation
from minigen.training.lifecycle import Run, RunConfig
from minigen.training.lr import warmup_cosine


@dataclass
class ViTTrainConfig(DataConfig, RunConfig):
    shift: float | None = setting(None, "random translation of training images by up to this fraction of their size "
                                        "(0: off; default 0.07, and 0 with --attributes: positions are named)",
                                  check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    preset: str = setting("cpu", "ViT size", choices=PRESETS)
    patch_size: int | None = setting(None, "patch size P (default: the preset's, 4; e.g. 8 for 64 px images: "
                                           "a quarter of the tokens)", check=at_least(1))
    stem: str = setting("patch", "patch: a linear map per patch (Dosovitskiy et al.); conv: a few stride-2 3x3 "
                                 "convolutions (Xiao et al. 2021), better at small shapes", choices=["patch", "conv"])
    attributes: bool = setting(False, "predict every named attribute of a captioned set (one softmax each), not "
                                      "the class: the prompt judge of minigen.evaluation.prompts --judge")
    steps: int = setting(3500, "optimizer steps", runtime=True, check=STEPS)
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
                           check=between(1, 100_000))
    out: str = setting("runs/vit", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)
    eval_every: int = setting(1000, "measure accuracy on 2,000 test images every N steps (0: only at the end)",
                             runtime=True, check=non_negative)
    log_every: int = setting(20, "append a line to OUT/metrics.jsonl every N steps", runtime=True,
                            check=at_least(1))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, groups: list[int], label_smoothing: float) -> torch.Tensor:
    """Σ_a CE(softmax of group a's logits, y_a): logits (B, Σ K_a), y (B, A); one group (the
    class, y (B,)) is ordinary classification."""
    y = y[:, None] if y.ndim == 1 else y
    return sum(F.cross_entropy(part, y[:, a], label_smoothing=label_smoothing)
               for a, part in enumerate(logits.split(groups, dim=1)))


def labels(data, index: torch.Tensor, attributes: bool) -> torch.Tensor:
    """What the head predicts for these images: the class (B,), or every attribute (B, A)."""
    return data.attributes[index] if attributes else data.labels[index]


@torch.no_grad()
def evaluate(model, data, device, groups: list[int], limit: int | None = None, batch: int = 500) -> float:
    """Top-1 accuracy on (the first `limit` images of) a data set; with attributes, the fraction
    of images whose every attribute is read right."""
    model.eval()
    n = min(len(data), limit or len(data))
    correct = 0
    for start in range(0, n, batch):
        index = torch.arange(start, min(n, start + batch))
        x, _ = data.batch(index)
        y = labels(data, index, len(groups) > 1)
        predicted = read_groups(model(x.to(device)).cpu(), groups)               # (B, A)
        correct += (predicted == (y[:, None] if y.ndim == 1 else y)).all(1).sum().item()
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


def train_step(net, optimizer, batch, noising: Diffusion | None, cfg, groups: list[int]):
    """One step of cross-entropy on shifted (and, with --noisy, forward-noised) images. No value
    is read on the host here: tests run it on the meta device."""
    x, y = batch
    if cfg.shift:
        x = translation(x, cfg.shift)                               # light augmentation
    t = None
    if noising is not None:                                         # x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
        t = torch.randint(0, noising.T, (len(x),), device=x.device)
        x = noising.q_sample(x, t)
    loss = cross_entropy(net(x, t), y, groups, cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def main(argv=None) -> int:
    run_ = Run.from_command_line(ViTTrainConfig, "vit", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    if cfg.attributes and cfg.flip:
        raise MinigenError("--flip with --attributes: positions are named (left, right); a mirror would contradict them")
    if cfg.shift is None:
        cfg = run_.cfg = dataclasses.replace(cfg, shift=0.0 if cfg.attributes else 0.07)
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    kw = {"root": cfg.data_root, "size": cfg.image_size, "channels": cfg.channels, "seed": cfg.seed,
          "download_missing": cfg.download and run_.main}
    train, test = train_and_test(cfg.dataset, **kw)                 # a folder: every 10th image held out
    train, test = cfg.select(train), cfg.select(test, limit=False)
    C, H, W = train.shape
    if len(train.classes) < 2:
        raise MinigenError(f"{cfg.dataset} has one class; a classifier needs at least two (use subfolders)")
    if cfg.attributes and train.attributes is None:
        raise MinigenError(f"--attributes: {cfg.dataset} has no named attributes (captioned-shapes has)")
    names = {k: list(v) for k, v in train.captioning.attributes.items()} if cfg.attributes else None
    groups = [len(v) for v in names.values()] if names else [len(train.classes)]   # K_a: one softmax each
    say(f"data: {cfg.dataset}, {len(train)} train / {len(test)} test images of {C}x{H}x{W}, "
        + (f"attributes {', '.join(f'{k} ({len(v)})' for k, v in names.items())}" if names
           else f"{len(train.classes)} classes"))

    # ---- model, optimizer -----------------------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, image_size=(H, W), num_classes=sum(groups), stem=cfg.stem,
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
    extra = {"classes": list(train.classes), "test_accuracy": None, "attributes": names}
    run_.attach(model, model_cfg, optimizer=optimizer, scheduler=scheduler, extra=extra, classes=list(train.classes))
    net = run_.wrap(model)

    # ---- training loop --------------------------------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            index = batch_indices(step, len(train), cfg.batch_size, cfg.seed, run_.rank, run_.world)
            x, _ = train.batch(index, flip=cfg.flip)
            y = labels(train, index, cfg.attributes)
            loss = train_step(net, optimizer, (x.to(device), y.to(device)), noising, cfg, groups)
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)
            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0])
            if run_.main and run_.due(cfg.eval_every, last=False):
                accuracy = evaluate(model, test, device, groups, limit=2000)
                say(f"step {step + 1}: test accuracy {accuracy:.2%} (first 2,000 test images)")
                run_.log_file.write(step + 1, test_accuracy_2k=accuracy)
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- test accuracy, checkpoint, attention maps ------------------------------------------
    if run_.main:
        extra["test_accuracy"] = accuracy = evaluate(model, test, device, groups)
        run_.log_file.write(run_.step, test_accuracy=accuracy)
        path = run_.save()
        picture = attention_picture(model, test, device, run_.out / "attention.png", n=min(8, len(test)))
        say(f"test accuracy {accuracy:.2%} on {len(test)} images after {run_.step} steps")
        say(f"wrote {path} and {picture}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
