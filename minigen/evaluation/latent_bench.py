"""Latent against pixel diffusion, timed in one process: what running the chain on latents buys.

    python -m minigen.evaluation.latent_bench --pixel runs/pixel-shapes64/last.pt --latent runs/ldm-shapes64/last.pt

Two trained checkpoints of the same data (a pixel model, and a latent one from train_ldm.py).
For each, in turns (bench.median_times), so that both see the same machine:

    training   one optimizer step as train_ddpm.py takes it, at --batch: the latent model's step
               draws z ~ q(z|x) from the batch's μ and log σ², encoded once beforehand, as
               train_ldm.py encodes its data set once at the start
    sampling   DDIM --steps with classifier-free guidance 3 at --sample-batch: the latent model's
               includes decoding the result once

and FLOPs per image counted by torch.utils.flop_counter (the decoder included), so the
speed-up can be read against the arithmetic saved. Prints the Markdown table docs/latent_diffusion.md quotes
and writes it with the numbers as JSON to --out.
"""

import argparse
import copy
import json
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import pipelines
from ..cli import Parser, between, number, run, writable_folder
from ..diffusion import SamplerConfig
from .bench import median_times


def training_step(pipe, batch: int, generator: torch.Generator):
    """One step of train_ddpm.py's (or train_ldm.py's) loop on random images of the pipeline's pixel shape, with a
    copy of its network: a fresh latent draw (latent models), the loss, backward, clipping, AdamW."""
    model = copy.deepcopy(pipe.network).train().requires_grad_(True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = (torch.rand(batch, *pipe.image_shape, generator=generator) * 2 - 1).to(pipe.device)
    y = torch.randint(0, max(pipe.num_classes, 1), (batch,), generator=generator).to(pipe.device)
    cond = {"y": y} if pipe.num_classes else {}
    moments = None if pipe.latent is None else pipe.latent.moments(x)     # once, as train_ldm.py does

    def step():
        x0 = x if moments is None else pipe.latent.draw(*moments)             # a fresh z ~ q(z|x) each step
        loss = pipe.diffusion.loss(model, x0.contiguous(memory_format=torch.channels_last), min_snr_gamma=5.0, **cond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def sampling_run(pipe, batch: int, steps: int):
    """DDIM `steps` at guidance 3 from fresh noise, decoded to pixels."""
    labels = torch.arange(batch) % max(pipe.num_classes, 1)
    sampler = SamplerConfig("ddim", steps, clip_x0=pipe.clip_x0)
    return lambda: pipe.to_pixels(sampler.sample(pipe.denoiser(3.0 if pipe.num_classes else 1.0), pipe.noise(batch),
                                                 cond=pipe.condition(labels), progress=False))


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.evaluation.latent_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixel", required=True, help="a pixel diffusion checkpoint (train_ddpm.py)")
    parser.add_argument("--latent", required=True, help="a latent one on the same data (train_ldm.py)")
    parser.add_argument("--batch", type=number(int, between(1, 4096)), default=64,
                        help="training batch (default: 64, train_ddpm.py's)")
    parser.add_argument("--sample-batch", type=number(int, between(1, 4096)), default=16,
                        help="images per sampling run (default: 16)")
    parser.add_argument("--steps", type=number(int, between(1, 10_000)), default=50, help="DDIM steps (default: 50)")
    parser.add_argument("--repeats", type=number(int, between(1, 100)), default=5,
                        help="timed rounds; the median is kept (default: 5)")
    parser.add_argument("--out", default="runs/latent-bench", help="folder for latent_bench.md/.json")
    args = parser.parse_args(argv)
    out = writable_folder(args.out)                         # before the work, not after it
    torch.manual_seed(0)
    pipes = {"pixel": pipelines.load(args.pixel, kind="ddpm"), "latent": pipelines.load(args.latent, kind="ddpm")}
    if pipes["latent"].latent is None or pipes["pixel"].latent is not None:
        parser.error("--pixel must be a pixel model and --latent a latent one (train_ldm.py)")
    if pipes["pixel"].image_shape != pipes["latent"].image_shape:
        parser.error(f"the two models make images of different shapes: {pipes['pixel'].image_shape} and "
                     f"{pipes['latent'].image_shape}")

    g = torch.Generator().manual_seed(0)
    trains = [training_step(pipe, args.batch, g) for pipe in pipes.values()]
    samples = [sampling_run(pipe, args.sample_batch, args.steps) for pipe in pipes.values()]
    train_flops = [flops_of(step) / args.batch for step in trains]          # also a warm-up round
    sample_flops = [flops_of(run) / args.sample_batch for run in samples]
    train_s = median_times(trains, torch.device("cpu"), args.repeats, warmup=1)
    sample_s = median_times(samples, torch.device("cpu"), max(2, args.repeats // 2), warmup=1)

    rows = []
    for i, (name, pipe) in enumerate(pipes.items()):
        rows.append({"model": name, "network_input": "x".join(map(str, pipe.noise_shape)),
                     "train_images_per_s": args.batch / train_s[i], "train_gflop_per_image": train_flops[i] / 1e9,
                     "sample_images_per_s": args.sample_batch / sample_s[i], "sample_gflop_per_image": sample_flops[i] / 1e9})
    pixel, latent = rows
    C, H, W = pipes["pixel"].image_shape
    lines = [f"{C}x{H}x{W} images, CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), timed in turns in one "
             f"process: training batch {args.batch}; DDIM {args.steps} steps, guidance 3, batch {args.sample_batch} "
             "(latent: latents drawn from moments encoded once; decoding included).", "",
             "| model | the U-Net sees | train images/s | train GFLOP/image | sample images/s | sample GFLOP/image |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['network_input']} | {r['train_images_per_s']:.1f} | {r['train_gflop_per_image']:.2f} | "
              f"{r['sample_images_per_s']:.2f} | {r['sample_gflop_per_image']:.1f} |" for r in rows]
    ratio = {"train": latent["train_images_per_s"] / pixel["train_images_per_s"],
             "sample": latent["sample_images_per_s"] / pixel["sample_images_per_s"]}
    lines += [f"| latent / pixel | | {ratio['train']:.1f}x | | {ratio['sample']:.1f}x | |"]
    table = "\n".join(lines)
    (out / "latent_bench.md").write_text(table + "\n")
    (out / "latent_bench.json").write_text(json.dumps({"rows": rows, "ratio": ratio, "args": vars(args)}, indent=2))
    print(table + f"\n\nwrote {out / 'latent_bench.md'} and {out / 'latent_bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
