"""Edit an image with a trained diffusion checkpoint: inpainting, image-to-image, inversion.

    python edit.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask-box 0,14,28,28 --class 3   # RePaint
    python edit.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask mask.png --class 3         # white = regenerate
    python edit.py --ckpt runs/ddpm/last.pt --init digit.png --strength 0.6 --class 3            # SDEdit
    python edit.py --ckpt runs/ddpm/last.pt --init digit.png --class 3 --sampler ddpm            # any sampler edits
    python edit.py --ckpt runs/ddpm/last.pt --invert digit.png --class 5                         # DDIM inversion
    python edit.py --ckpt runs/t2i/last.pt --inpaint photo.png --mask-box 8,8,24,24 --prompt "a large green triangle ..."

Each is the sampling loop of minigen/diffusion/ with another start, other timesteps or a
per-step projection (minigen/diffusion/editing.py), so every sampler and guidance flag of
sample.py works here too. The result is one side-by-side picture: the input, the mask or x_T,
and the results. A latent model edits μ(x)·s of the image and decodes the result; inpainting
takes its mask down to the latent grid.

Same --seed, same images. A bad image, mask or flag is reported in one line, with exit status 2.
"""

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from minigen import pipelines
from minigen.cli import Parser, add_config_args, between, flag_of, parse_config, run, setting, writable_image
from minigen.data import to_float
from minigen.data.readers import box_mask, read_image, read_mask
from minigen.device import pick_device
from minigen.diffusion.editing import REPAINT_JUMP, REPAINT_RESAMPLE
from minigen.errors import MinigenError
from minigen.evaluation.metrics import psnr, ssim
from minigen.images import mask_panel, save_grid
from minigen.sampling import SamplingConfig, command, compiled, conditioner, describe, generator_for, make_denoiser, resolve
from minigen.sampling import sampler_config

JOBS = ("inpaint", "init", "invert")


@dataclass
class EditConfig(SamplingConfig):
    inpaint: str | None = setting(None, "regenerate the masked part of IMAGE (RePaint)", metavar="IMAGE")
    mask: str | None = setting(None, "grayscale mask of IMAGE's size: white = regenerate", metavar="MASK")
    mask_box: str | None = setting(None, "regenerate this box (pixels of the model's size)", metavar="x0,y0,x1,y1")
    jump_length: int = setting(REPAINT_JUMP, "RePaint: steps per resampling block", check=between(1, 1000))
    resample: int = setting(REPAINT_RESAMPLE, "RePaint: times each block is denoised", check=between(1, 100))
    init: str | None = setting(None, "image-to-image (SDEdit): start from IMAGE noised to --strength", metavar="IMAGE")
    strength: float = setting(0.6, "SDEdit noise level in (0, 1]", check=between(0, 1, low_open=True))
    invert: str | None = setting(None, "DDIM-invert IMAGE to x_T, reconstruct it (PSNR, SSIM) and re-sample the same "
                                       "x_T with --class (or --prompt)", metavar="IMAGE")
    out: str = setting("edit.png", "output picture (input, mask or x_T, results side by side)")


def job_of(cfg: EditConfig, given: set[str]) -> str:
    """The one edit asked for, with its own flags checked."""
    needs = {"mask": "inpaint", "mask_box": "inpaint", "jump_length": "inpaint", "resample": "inpaint",
             "strength": "init"}
    for name, parent in needs.items():
        if name in given and getattr(cfg, parent) is None:
            raise MinigenError(f"{flag_of(EditConfig, name)} goes with {flag_of(EditConfig, parent)}")
    jobs = [job for job in JOBS if getattr(cfg, job) is not None]
    if len(jobs) != 1:
        raise MinigenError("say what to edit: one of --inpaint IMAGE, --init IMAGE, --invert IMAGE"
                           if not jobs else f"--{jobs[0]} and --{jobs[1]}: one edit at a time")
    if jobs[0] == "invert" and cfg.n not in (None, 1):
        raise MinigenError(f"-n {cfg.n}: --invert works on one image")
    return jobs[0]


def main(argv=None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, EditConfig)
    cfg, given = parse_config(parser, EditConfig, argv)
    job = job_of(cfg, given)
    out = writable_image(cfg.out)
    device, reason = pick_device(cfg.device)
    print(f"device: {reason}")
    pipe = pipelines.load(cfg.ckpt, device, kind="ddpm")
    print(describe(pipe))
    cfg = resolve(cfg, given, pipe, job)
    (C, H, W), n = pipe.image_shape, cfg.n or (1 if job == "invert" else 4)
    labels = torch.full((n,), cfg.class_ if cfg.class_ is not None else 0)      # with prompts: the prompt's index
    sampler = sampler_config(cfg, pipe)
    denoiser = make_denoiser(cfg, pipe, labels, compiled(pipe.network, cfg, device))
    generator = generator_for(cfg, n, device)
    condition = conditioner(cfg, pipe)
    image = to_float(torch.from_numpy(read_image(getattr(cfg, job), C, (H, W))))[None].to(device)   # (1, C, H, W)
    loop = {"cond": condition(labels), "generator": generator, "progress": cfg.progress}
    start = time.perf_counter()

    if job == "inpaint":                # RePaint: the known pixels from the image, the rest drawn
        if cfg.mask_box:
            keep = box_mask(cfg.mask_box, (H, W))
        elif cfg.mask:
            keep = read_mask(cfg.mask, cfg.inpaint, (H, W))
        else:
            raise MinigenError("--inpaint needs --mask MASK or --mask-box x0,y0,x1,y1")
        keep = torch.from_numpy(keep)[None, None].to(device)                # (1, 1, H, W)
        result = pipe.inpaint(sampler, denoiser, image, keep, n, cfg.jump_length, cfg.resample, **loop)
        shown = image * keep + (1 - keep) * -1                              # the known part only
        panels = torch.cat([image, mask_panel(keep, image), shown, result])
        captions = ["input", "mask", "kept"] + [f"result {i + 1}" for i in range(n)]
        what = (f"inpainting (RePaint, {sampler.sampler} {sampler.steps} steps, jump {cfg.jump_length}, "
                f"resample {cfg.resample})")
    elif job == "init":                 # SDEdit: the image noised to --strength, then denoised
        result = pipe.sdedit(sampler, denoiser, image, cfg.strength, n, **loop)
        panels, captions = torch.cat([image, result]), ["input"] + [f"s={cfg.strength}"] * n
        what = f"SDEdit at strength {cfg.strength} ({sampler.sampler})"
    else:                               # inversion: the image's class is not given, so the unconditional model
        x_T, back = pipe.invert(sampler, image, loop["cond"], cfg.progress)
        print(f"DDIM inversion, {sampler.steps} steps: reconstruction PSNR {psnr(back, image):.2f} dB, "
              f"SSIM {ssim(back, image):.4f}")
        panels, captions = torch.cat([image, back]), ["input", "reconstructed"]
        if pipe.latent is None:                                             # x_T is a picture only in pixel space
            panels, captions = torch.cat([image, x_T.clamp(-1, 1), back]), ["input", "x_T", "reconstructed"]
        if pipe.num_classes and cfg.class_ is not None or cfg.prompt:       # the same x_T, told something else
            edited = pipe.to_pixels(sampler.sample(denoiser, x_T, cond=condition(labels[:1]), generator=generator,
                                                   progress=False))
            name = cfg.prompt[0][:24] if cfg.prompt else pipe.classes[cfg.class_] if pipe.classes else cfg.class_
            panels, captions = torch.cat([panels, edited]), captions + [f"as {name}"]
        what = "DDIM inversion"
    path = save_grid(panels, out, nrow=len(panels), captions=captions, scale=max(1, 96 // max(H, W)),
                     text={"minigen": command("edit.py", argv)})                  # the command, inside the PNG
    print(f"wrote {path}: {what}, {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
