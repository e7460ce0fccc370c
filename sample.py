"""Draw samples from a trained checkpoint (diffusion or GAN): the model is rebuilt from the config in it.

    python sample.py --ckpt runs/ddpm/last.pt                       # a grid, one row per class
    python sample.py --ckpt runs/ddpm/last.pt --class 7 -n 16       # sixteen 7s
    python sample.py --ckpt runs/ddpm/last.pt --sampler ddpm --steps 1000 --guidance 1
    python sample.py --ckpt runs/ddpm/last.pt --sampler dpm++ --steps 10      # DPM-Solver++(2M): few steps
    python sample.py --ckpt runs/ddpm/last.pt --class 8 --negative-class 3 --guidance 4
    python sample.py --ckpt runs/ddpm/last.pt --strip --gif         # the reverse process, as a strip and a GIF
    python sample.py --ckpt runs/gan/last.pt --min-d-prob 0.7       # GAN samples D scores as real
    python sample.py --ckpt runs/gan/last.pt --interpolate 10       # a walk between two latents (also DDIM)
    python sample.py --ckpt runs/t2i/last.pt --prompt "a large blue circle in the centre on black"   # text to image
    python sample.py --ckpt runs/t2i/last.pt --prompt "a small red cross at the top left on white" --negative-prompt red
    python sample.py --ckpt runs/shapes/last.pt --color-target 1,0,0 --color-scale 20     # guidance by a loss
    python sample.py --ckpt runs/cshapes/last.pt --clip runs/clip/last.pt --clip-guidance "a small blue circle ..."

Editing an image (inpainting, SDEdit, inversion) is edit.py, with the same sampler and guidance
flags. A latent diffusion checkpoint (train_ldm.py) carries its autoencoder: every flag works on
it the same way (the sampler runs on latents; pictures are decoded).

Same --seed, same images; the command that made a grid is saved inside its PNG (text chunk
"minigen"). A missing, corrupt, code-carrying or wrong-kind checkpoint, or a flag
that does not apply to it, is reported in one line, with exit status 2.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minigen import pipelines
from minigen.cli import Parser, add_config_args, between, parse_config, refuse_moved, run, setting
from minigen.cli import writable_folder, writable_image
from minigen.device import pick_device
from minigen.diffusion import Frames, SamplerConfig
from minigen.errors import MinigenError
from minigen.images import save_gif, save_grid, save_npz, save_pngs, save_strip
from minigen.interpolation import slerp
from minigen.seeds import ImageSeeds
from minigen.sampling import SamplingConfig, command, compiled, conditioner, describe, generator_for, make_denoiser, resolve
from minigen.sampling import sampler_config

EDIT = "editing is edit.py's now, with the same flags: python edit.py --ckpt CKPT "
MOVED = {"--inpaint": EDIT + "--inpaint IMAGE --mask-box x0,y0,x1,y1", "--init": EDIT + "--init IMAGE --strength S",
         "--invert": EDIT + "--invert IMAGE", "--mask": EDIT + "--inpaint IMAGE --mask MASK",
         "--mask-box": EDIT + "--inpaint IMAGE --mask-box x0,y0,x1,y1", "--strength": EDIT + "--init IMAGE --strength S",
         "--jump-length": EDIT + "--inpaint IMAGE --jump-length J", "--resample": EDIT + "--inpaint IMAGE --resample R"}


@dataclass
class SampleConfig(SamplingConfig):
    out: str = setting("samples.png", "output grid")
    save_npz: str | None = setting(None, "also write the samples as uint8 (N, H, W, C) `images` with their `labels`, "
                                         "the layout other evaluation tools read", metavar="FILE")
    save_dir: str | None = setting(None, "also write one PNG per sample into DIR", metavar="DIR")
    strip: bool = setting(False, "also write OUT_strip.png: the reverse process of the first image")
    gif: bool = setting(False, "also write OUT.gif: the whole grid denoising")
    interpolate: int | None = setting(None, "also write OUT_interp.png and .gif: N steps of a spherical walk between "
                                            "two latents (GAN z, or DDIM x_T with eta 0)", check=between(2, 1000),
                                      metavar="N")
    min_d_prob: float | None = setting(None, "GAN only: keep samples the discriminator scores as real with "
                                             "probability >= P (e.g. 0.7), drawing more until there are enough",
                                       check=between(0, 1), metavar="P")


def check_outputs(cfg: SampleConfig) -> Path:
    """Every file the run will write, checked before any work."""
    out = writable_image(cfg.out)
    if cfg.save_npz:
        if not cfg.save_npz.endswith(".npz") or Path(cfg.save_npz).is_dir():
            raise MinigenError(f"--save-npz {cfg.save_npz}: give a file name ending in .npz (not a folder)")
        writable_folder(Path(cfg.save_npz).parent, flag="--save-npz")
    if cfg.save_dir:
        writable_folder(cfg.save_dir, flag="--save-dir")
    if cfg.interpolate:
        writable_image(out.with_name(out.stem + "_interp.png"))
    if cfg.gif and out.suffix.lower() == ".gif":
        raise MinigenError(f"--out {cfg.out} with --gif: the grid and the GIF would be the same file; "
                           f"give --out {out.with_suffix('.png')}")
    return out


def labels_for(cfg: SampleConfig, pipe) -> torch.Tensor:
    """What each image is told: a row per class (or per prompt, whose index stands for it), or one class."""
    K, P = pipe.num_classes, len(cfg.prompt)
    if K and cfg.class_ is None:
        n = cfg.n or 10 * K
        return torch.arange(n) * K // n                     # rows of equal length, class by class
    if P:
        if cfg.n is not None and cfg.n < P:
            raise MinigenError(f"-n {cfg.n}: fewer images than the {P} prompts; give -n {P} or more")
        n = cfg.n or 8 * P
        return torch.arange(n) * P // n                     # rows of equal length, prompt by prompt
    return torch.full((cfg.n or (16 if K else 64),), cfg.class_ if cfg.class_ is not None else 0)


def interpolation(cfg: SampleConfig, pipe, net, labels, generator, out: Path) -> None:
    """OUT_interp.png and .gif: a spherical walk between two latents (GAN z, or DDIM x_T with η = 0,
    where x_T decides the image), told the first label. With --image-seeds the ends are images
    0 and 1's own latents."""
    label, fractions = labels[:1].expand(cfg.interpolate), torch.linspace(0, 1, cfg.interpolate)
    if cfg.image_seeds:
        generator = ImageSeeds(cfg.seed, 2, pipe.device)
    if pipe.kind == "gan":
        ends = pipe.latent(2, generator)
        with torch.no_grad():
            walk = net(slerp(ends[0], ends[1], fractions).to(pipe.device), label.to(pipe.device) if pipe.num_classes
                       else None)
    else:
        ends, sampler = pipe.noise(2, generator), sampler_config(cfg, pipe)
        ddim = SamplerConfig("ddim", sampler.steps, 0.0, sampler.spacing, clip_x0=sampler.clip_x0,
                             dynamic_threshold=sampler.dynamic_threshold)
        walk = pipe.to_pixels(ddim.sample(make_denoiser(cfg, pipe, label, net),
                                          slerp(ends[0], ends[1], fractions).to(pipe.device),
                                          cond=conditioner(cfg, pipe)(label), progress=cfg.progress))
    strip = save_strip(walk, out.with_name(out.stem + "_interp.png"), captions=[f"{s:.2f}" for s in fractions.tolist()])
    gif = save_gif(list(walk) + list(walk.flip(0)), out.with_name(out.stem + "_interp.gif"), duration_ms=120)
    print(f"wrote {strip} and {gif} (spherical interpolation between two latents)")


def main(argv=None) -> int:
    refuse_moved(argv, MOVED)
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, SampleConfig)
    cfg, given = parse_config(parser, SampleConfig, argv)
    out = check_outputs(cfg)
    device, reason = pick_device(cfg.device)
    print(f"device: {reason}")
    pipe = pipelines.load(cfg.ckpt, device, kind=("ddpm", "gan"))
    print(describe(pipe))
    if pipe.kind == "gan" and (cfg.strip or cfg.gif):
        raise MinigenError(f"--{'strip' if cfg.strip else 'gif'} is for diffusion checkpoints; {cfg.ckpt} is a GAN "
                           "(a GAN has no reverse process: try --interpolate)")
    if pipe.kind != "gan" and cfg.min_d_prob is not None:
        raise MinigenError("--min-d-prob needs a GAN checkpoint (a diffusion model has no discriminator)")
    if cfg.min_d_prob is not None and cfg.image_seeds:
        raise MinigenError("--min-d-prob draws as many latents as it needs: it cannot give image i the seed + i")
    cfg = resolve(cfg, given, pipe)
    labels = labels_for(cfg, pipe)
    n, K = len(labels), pipe.num_classes
    net = compiled(pipe.generator if pipe.kind == "gan" else pipe.network, cfg, device)
    generator = generator_for(cfg, n, device)

    # ---- sampling ------------------------------------------------------------------------------
    start = time.perf_counter()
    frames = Frames() if cfg.strip or cfg.gif else None
    if pipe.kind == "gan":
        x, drawn = pipe.sample(labels, n, generator, cfg.min_d_prob, network=net)
        method = "GAN" + (f", kept {n} of {drawn} draws with D(x) >= {cfg.min_d_prob}" if cfg.min_d_prob is not None else "")
    else:
        sampler = sampler_config(cfg, pipe)
        x = pipe.generate(sampler, make_denoiser(cfg, pipe, labels, net), n, generator,
                          cond=conditioner(cfg, pipe)(labels), callback=frames, progress=cfg.progress)
        method = f"{sampler.sampler} {sampler.steps} steps"
    seconds = time.perf_counter() - start

    # ---- pictures: the grid (a row per class or prompt), files, the reverse process -------------
    per_row, row_labels = (10 if K and cfg.class_ is None else None), None
    if K and cfg.class_ is None and n % K == 0:
        per_row, row_labels = n // K, [str(c)[:10] for c in pipe.classes] if pipe.classes else [str(k) for k in range(K)]
    if cfg.prompt and n % len(cfg.prompt) == 0:
        per_row, row_labels = n // len(cfg.prompt), [p[:40] for p in cfg.prompt]
    made_by = {"minigen": command("sample.py", argv)}                 # the command, inside the PNG
    print(f"wrote {save_grid(x, out, nrow=per_row, row_labels=row_labels, text=made_by)}")
    if cfg.save_npz:
        print(f"wrote {save_npz(x, cfg.save_npz, labels if K else None)} ({n} samples, uint8 N x H x W x C)")
    if cfg.save_dir:
        names = [str(pipe.classes[k]) if pipe.classes else str(k) for k in labels.tolist()] if K else None
        print(f"wrote {n} PNGs into {save_pngs(x, cfg.save_dir, names)}")
    # The reverse process as x_t; a latent model's as the decoded x̂_0 (a decoded noisy latent is no picture).
    shown = "x_t" if pipe.latent is None else "x0"
    if cfg.strip:
        strip, captions = frames.strip(10, of=shown)
        print(f"wrote {save_strip(pipe.to_pixels(strip), out.with_name(out.stem + '_strip.png'), captions=captions)}")
    if cfg.gif:
        kept = frames.x_t if shown == "x_t" else frames.x0
        print(f"wrote {save_gif([pipe.to_pixels(kept[i]) for i in frames.picks(40)], out.with_suffix('.gif'))}")
    print(f"{method}: {n} images in {seconds:.2f}s ({n / seconds:.1f} images/s, {seconds / n:.4f} s/image"
          + (", including the compilation" if cfg.compile or cfg.cuda_graphs else "") + ")")

    if cfg.interpolate:
        interpolation(cfg, pipe, net, labels, generator, out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
