"""Draw samples from a trained checkpoint (DDPM or GAN): the model is rebuilt from the config in it.

    python sample.py --ckpt runs/ddpm/last.pt                       # a grid, one row per class
    python sample.py --ckpt runs/ddpm/last.pt --class 7 -n 16       # sixteen 7s
    python sample.py --ckpt runs/ddpm/last.pt --sampler ddpm --steps 1000 --guidance 1
    python sample.py --ckpt runs/ddpm/last.pt --class 8 --negative-class 3 --guidance 4
    python sample.py --ckpt runs/ddpm/last.pt --strip --gif         # the reverse process, as a strip and a GIF
    python sample.py --ckpt runs/gan/last.pt --min-d-prob 0.7       # GAN samples D scores as real
    python sample.py --ckpt runs/gan/last.pt --interpolate 10       # a walk between two latents (also DDIM)

Editing with a diffusion checkpoint (minigen/editing.py), each written as a side-by-side picture:
    python sample.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask-box 0,14,28,28   # RePaint
    python sample.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask mask.png         # white = regenerate
    python sample.py --ckpt runs/ddpm/last.pt --init digit.png --strength 0.6 --class 3  # SDEdit
    python sample.py --ckpt runs/ddpm/last.pt --invert digit.png --class 5               # DDIM inversion, edit
    python sample.py --ckpt runs/shapes/last.pt --color-target 1,0,0 --color-scale 20     # guidance by a loss

Same --seed, same images. A missing, corrupt, code-carrying or wrong-kind checkpoint is
reported in one line, with exit status 2.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from minigen.checkpoint import load_checkpoint
from minigen.cli import run
from minigen.data import to_float
from minigen.data.readers import resize_center_crop
from minigen.dcgan import DCGANConfig, Discriminator, Generator
from minigen.diffusion import SPACINGS, Diffusion
from minigen.editing import colour_loss, inpaint, sdedit
from minigen.errors import CheckpointError, MinigenError
from minigen.images import save_gif, save_grid, save_strip
from minigen.latent import slerp
from minigen.metrics import psnr, ssim
from minigen.runtime import pick_device
from minigen.schedules import make_betas
from minigen.unet import UNet, UNetConfig
from minigen.vit import ViT, ViTConfig

KINDS = ("ddpm", "gan")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train_ddpm.py (e.g. runs/ddpm/last.pt)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim", help="ancestral DDPM or DDIM (default: ddim)")
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: 50 for ddim, T for ddpm)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like (default: 0)")
    p.add_argument("--spacing", choices=SPACINGS, default="trailing", help="which timesteps to visit (default: trailing)")
    p.add_argument("--variance", choices=["small", "large"], default="small",
                   help="DDPM variance: posterior β̃ (small) or β (large) (default: small)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale w; 1 = none (default: 3)")
    p.add_argument("--class", dest="class_", type=int, default=None,
                   help="generate this class only (default: a row per class)")
    p.add_argument("--negative-class", type=int, default=None,
                   help="steer away from this class (a 'negative prompt': replaces the unconditional pass)")
    p.add_argument("-n", type=int, default=None, help="number of images (default: 10 per class, or 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same images (default: 0)")
    p.add_argument("--out", default="samples.png", help="output grid (default: samples.png)")
    p.add_argument("--strip", action="store_true", help="also write OUT_strip.png: the reverse process of the first image")
    p.add_argument("--gif", action="store_true", help="also write OUT.gif: the whole grid denoising")
    p.add_argument("--no-clip", action="store_true", help="do not clip the predicted x_0 to [-1, 1]")
    p.add_argument("--dynamic-threshold", type=float, default=None, metavar="P",
                   help="dynamic thresholding of x_0 at percentile P, e.g. 0.995 (Saharia et al. 2022)")
    p.add_argument("--min-d-prob", type=float, default=None, metavar="P",
                   help="GAN only: keep samples the discriminator scores as real with probability >= P "
                        "(e.g. 0.7), drawing more until there are enough")
    p.add_argument("--interpolate", type=int, default=None, metavar="N",
                   help="also write OUT_interp.png and .gif: N steps of a spherical walk between two latents "
                        "(GAN z, or DDIM x_T with eta 0)")
    e = p.add_argument_group("editing (diffusion checkpoints)")
    e.add_argument("--inpaint", metavar="IMAGE", help="regenerate the masked part of IMAGE (RePaint)")
    e.add_argument("--mask", metavar="MASK", help="grayscale mask of IMAGE's size: white = regenerate")
    e.add_argument("--mask-box", metavar="x0,y0,x1,y1", help="regenerate this box (pixels of the model's size)")
    e.add_argument("--jump-length", type=int, default=10, help="RePaint: steps per resampling block (default: 10)")
    e.add_argument("--resample", type=int, default=5, help="RePaint: times each block is denoised (default: 5)")
    e.add_argument("--init", metavar="IMAGE", help="image-to-image (SDEdit): start from IMAGE noised to --strength")
    e.add_argument("--strength", type=float, default=0.6, help="SDEdit noise level in (0, 1] (default: 0.6)")
    e.add_argument("--invert", metavar="IMAGE", help="DDIM-invert IMAGE to x_T, reconstruct it (PSNR, SSIM) "
                                                     "and re-sample the same x_T with --class")
    e.add_argument("--classifier", metavar="CKPT", help="classifier guidance by a ViT trained with "
                                                        "train_vit.py --noisy (Dhariwal & Nichol 2021)")
    e.add_argument("--classifier-scale", type=float, default=1.0, help="classifier guidance scale s (default: 1)")
    e.add_argument("--color-target", metavar="R,G,B", help="guide samples towards this colour (values in [0, 1])")
    e.add_argument("--color-scale", type=float, default=20.0, help="strength of the colour guidance (default: 20)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network with frozen weights (the per-step call, not the loop)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_ddpm(state: dict, device: torch.device):
    """The EMA U-Net and the Diffusion of a train_ddpm.py checkpoint."""
    try:
        model = UNet(UNetConfig(**state["config"]))
        model.load_state_dict(state["ema"]["model"] if "ema" in state else state["model"])
        train = state["extra"]["train"]
        diffusion = Diffusion(make_betas(train["schedule"], train["T"]), prediction=train["prediction"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this minigen's U-Net ({str(e).splitlines()[0][:150]})") from None
    return model.to(device).eval(), diffusion, state["extra"].get("classes", [])


def load_gan(state: dict, device: torch.device):
    """The EMA generator and the discriminator of a train_gan.py checkpoint."""
    try:
        config = DCGANConfig(**state["config"])
        G, D = Generator(config), Discriminator(config)
        G.load_state_dict(state["ema"]["model"] if "ema" in state else state["model"])
        D.load_state_dict(state["others"]["discriminator"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this minigen's DCGAN ({str(e).splitlines()[0][:150]})") from None
    return G.to(device).eval(), D.to(device).eval(), state["extra"].get("classes", [])


@torch.no_grad()
def gan_samples(G, D, labels, n, generator, device, min_d_prob):
    """n samples of G (EMA); with min_d_prob, redraw each slot until D's probability of "real"
    reaches it (at most 50 rounds). Returns images and the number of candidates drawn."""
    z_dim, K = G.config.z_dim, G.config.num_classes
    y = labels.to(device) if labels is not None else None
    x = G(torch.randn(n, z_dim, generator=generator, device=device), y)
    drawn = n
    if min_d_prob is None:
        return x, drawn
    keep = torch.sigmoid(D(x, y)) >= min_d_prob
    per_slot = 32                                 # candidates drawn at once for each slot still empty
    for _ in range(50):
        missing = (~keep).nonzero().flatten()
        if len(missing) == 0:
            break
        y_try = y[missing].repeat(per_slot) if K else None                     # (per_slot·m,)
        candidates = G(torch.randn(per_slot * len(missing), z_dim, generator=generator, device=device), y_try)
        score = torch.sigmoid(D(candidates, y_try)).reshape(per_slot, len(missing))
        best = score.argmax(0)                                                 # (m,) the best try per slot
        accepted = score[best, torch.arange(len(missing))] >= min_d_prob
        chosen = candidates.reshape(per_slot, len(missing), *x.shape[1:])[best, torch.arange(len(missing))]
        x[missing[accepted]] = chosen[accepted]
        keep[missing[accepted]] = True
        drawn += per_slot * len(missing)
    if not keep.all():
        raise MinigenError(f"--min-d-prob {min_d_prob}: only {int(keep.sum())} of {n} samples reached it after "
                           f"{drawn} draws; ask for a lower threshold")
    return x, drawn


def load_image(path: str, channels: int, size: tuple[int, int], what: str = "image") -> torch.Tensor:
    """An image file as a (1, C, H, W) tensor in [-1, 1] at the model's size; its channel count
    must be the model's (1: grayscale, 3: RGB)."""
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise MinigenError(f"{path}: no such {what} file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise MinigenError(f"{path}: not a readable image ({type(e).__name__})") from None
    has = len(img.getbands()) - ("A" in img.getbands())
    if has != channels:
        kind = {1: "grayscale", 3: "RGB"}
        name = kind.get(has, f"{has}-channel")
        raise MinigenError(f"{path}: {'an' if name[0] in 'AEIOUR' else 'a'} {name} image, but the model makes "
                           f"{kind.get(channels, channels)} images; convert it first")
    img = resize_center_crop(img.convert("L" if channels == 1 else "RGB"), *size)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    arr = arr[None] if channels == 1 else arr.permute(2, 0, 1)              # (H, W, C) -> (C, H, W)
    return to_float(arr)[None]


def load_mask(args, image_path: str, size: tuple[int, int]) -> torch.Tensor:
    """keep (1, 1, H, W): 1 where the image is kept, 0 where it is regenerated."""
    H, W = size
    if args.mask_box:
        try:
            x0, y0, x1, y1 = (int(v) for v in args.mask_box.split(","))
        except ValueError:
            raise MinigenError(f"--mask-box {args.mask_box}: give four integers x0,y0,x1,y1") from None
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise MinigenError(f"--mask-box {args.mask_box}: must lie inside the {W}x{H} image with x0 < x1, y0 < y1")
        keep = torch.ones(1, 1, H, W)
        keep[..., y0:y1, x0:x1] = 0
        return keep
    if not args.mask:
        raise MinigenError("--inpaint needs --mask MASK or --mask-box x0,y0,x1,y1")
    try:
        with Image.open(args.mask) as mask, Image.open(image_path) as image:
            mask.load()
            image_size = image.size
    except FileNotFoundError as e:
        raise MinigenError(f"{e.filename}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise MinigenError(f"{args.mask}: not a readable image ({type(e).__name__})") from None
    if mask.mode not in ("L", "1"):
        raise MinigenError(f"{args.mask}: a {mask.mode} image; the mask must be grayscale (white = regenerate)")
    if mask.size != image_size:
        raise MinigenError(f"{args.mask}: {mask.size[0]}x{mask.size[1]}, but the image is "
                           f"{image_size[0]}x{image_size[1]}; the mask must have the image's size")
    mask = resize_center_crop(mask.convert("L"), H, W)
    return (torch.from_numpy(np.asarray(mask, dtype=np.float32).copy()) < 128).float()[None, None]


def edit(args, model, diffusion: Diffusion, classes, device, generator) -> int:
    """Inpainting, SDEdit, DDIM inversion: one side-by-side picture each."""
    C, (H, W), K = model.config.image_channels, model.config.image_size, model.config.num_classes
    out = Path(args.out)
    n = args.n or 4
    if args.class_ is None and K and (args.init or args.inpaint):
        raise MinigenError("this model is class-conditional: say which class to draw with --class K")
    labels = torch.full((n,), args.class_, device=device) if K else None
    common = {"y": labels, "guidance": args.guidance if K else 1.0, "null_label": K if K else None}
    start = time.perf_counter()
    if args.inpaint:
        image = load_image(args.inpaint, C, (H, W)).to(device)
        keep = load_mask(args, args.inpaint, (H, W)).to(device)
        x0 = image.expand(n, -1, -1, -1)
        result = inpaint(diffusion, model, x0, keep, steps=args.steps or 100, jump_length=args.jump_length,
                         resample=args.resample, generator=generator, progress=not args.no_progress, **common)
        shown = image * keep + (1 - keep) * -1                              # the known part only
        panels = torch.cat([image, (1 - keep) * 2 - 1, shown, result])     # mask shown white = regenerated
        captions = ["input", "mask", "kept"] + [f"result {i + 1}" for i in range(n)]
        what = f"inpainting (RePaint, {args.steps or 100} steps, jump {args.jump_length}, resample {args.resample})"
    elif args.init:
        if not 0 < args.strength <= 1:
            raise MinigenError(f"--strength {args.strength}: must be in (0, 1]")
        image = load_image(args.init, C, (H, W)).to(device)
        result = sdedit(diffusion, model, image.expand(n, -1, -1, -1), args.strength, steps=args.steps or 50,
                        generator=generator, progress=not args.no_progress, **common)
        panels, captions = torch.cat([image, result]), ["input"] + [f"s={args.strength}"] * n
        what = f"SDEdit at strength {args.strength}"
    else:
        image = load_image(args.invert, C, (H, W)).to(device)
        steps = args.steps or 50
        source = None
        if K:   # the image's class is not given: invert with the unconditional model (the null label)
            source = torch.full((1,), K, device=device)
        x_T = diffusion.ddim_invert(model, image, steps=steps, y=source, refine=3, progress=not args.no_progress)
        back = diffusion.sample(model, image.shape, steps=steps, x_T=x_T, y=source, clip_x0=False,
                                progress=False, device=device)
        print(f"DDIM inversion, {steps} steps: reconstruction PSNR {psnr(back, image):.2f} dB, "
              f"SSIM {ssim(back, image):.4f}")
        panels, captions = torch.cat([image, x_T.clamp(-1, 1), back]), ["input", "x_T", "reconstructed"]
        if K and args.class_ is not None:
            edited = diffusion.sample(model, image.shape, steps=steps, x_T=x_T, y=labels[:1],
                                      guidance=args.guidance, null_label=K, progress=False, device=device)
            panels, captions = torch.cat([panels, edited]), captions + [f"as {classes[args.class_] if classes else args.class_}"]
        what = "DDIM inversion"
    seconds = time.perf_counter() - start
    path = save_grid(panels, out, nrow=len(panels), captions=captions, scale=max(1, 96 // max(H, W)))
    print(f"wrote {path}: {what}, {seconds:.1f}s")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device, reason = pick_device(args.device)
    print(f"device: {reason}")
    state = load_checkpoint(args.ckpt)
    if state["kind"] not in KINDS:
        raise CheckpointError(f"{args.ckpt}: a {state['kind']!r} checkpoint; sample.py reads {', '.join(KINDS)}")
    if state["kind"] == "gan":
        model, D, classes = load_gan(state, device)
        C, H, W, K = model.config.image_channels, model.config.image_size, model.config.image_size, model.config.num_classes
        print(f"model: DCGAN at step {state['step']}, {C}x{H}x{W}, {len(classes) if K else 'no'} classes")
    else:
        if args.min_d_prob is not None:
            raise MinigenError("--min-d-prob needs a GAN checkpoint (a diffusion model has no discriminator)")
        model, diffusion, classes = load_ddpm(state, device)
        C, (H, W), K = model.config.image_channels, model.config.image_size, model.config.num_classes
        print(f"model: DDPM at step {state['step']}, {C}x{H}x{W}, {len(classes) if K else 'no'} classes, "
              f"prediction {diffusion.prediction}, T = {diffusion.T}")

    editing = [flag for flag in ("inpaint", "init", "invert") if getattr(args, flag)]
    if len(editing) > 1:
        raise MinigenError(f"--{editing[0]} and --{editing[1]}: one edit at a time")
    if editing and state["kind"] != "ddpm":
        raise MinigenError(f"--{editing[0]} needs a diffusion checkpoint; {args.ckpt} is a {state['kind']!r} one")
    for name, value in (("--class", args.class_), ("--negative-class", args.negative_class)):
        if value is not None and not (0 <= value < K):
            raise MinigenError(f"{name} {value}: this model has " + (f"classes 0..{K - 1}" if K else "no classes"))
    if editing:
        return edit(args, model, diffusion, classes, device, torch.Generator(device=device).manual_seed(args.seed))

    # ---- labels: a row per class, or one class -------------------------------------------
    if K and args.class_ is None:
        n = args.n or 10 * K
        labels = torch.arange(n) * K // n                     # rows of equal length, class by class
    elif K:
        n = args.n or 16
        labels = torch.full((n,), args.class_)
    else:
        n, labels = args.n or 64, None
    if n < 1:
        raise MinigenError(f"-n {n}: ask for at least one image")
    if state["kind"] == "gan" and args.negative_class is not None:
        raise MinigenError("--negative-class steers classifier-free guidance; a GAN checkpoint has none")
    negative = torch.full((n,), args.negative_class, device=device) if args.negative_class is not None else None

    # ---- sample -----------------------------------------------------------------------------
    # Sampling never changes the weights, so inductor may treat them as constants ("freezing"): it
    # folds them into the graph and pre-packs convolution weights for oneDNN. Only the per-step
    # network call is compiled; the sampling loop stays Python (README, Performance).
    net = torch.compile(model, options={"freezing": True}) if args.compile else model
    generator = torch.Generator(device=device).manual_seed(args.seed)
    want_frames = args.strip or args.gif
    start = time.perf_counter()
    if state["kind"] == "gan":
        if want_frames:
            raise MinigenError("--strip and --gif show a diffusion model's reverse process; a GAN has none "
                               "(try --interpolate)")
        x, drawn = gan_samples(net, D, labels, n, generator, device, args.min_d_prob)
        method = "GAN" + (f", kept {n} of {drawn} draws with D(x) >= {args.min_d_prob}" if args.min_d_prob is not None else "")
        inter = None
    else:
        steps = args.steps or (50 if args.sampler == "ddim" else diffusion.T)
        if not 1 <= steps <= diffusion.T:
            raise MinigenError(f"--steps {steps}: must be between 1 and T = {diffusion.T}")
        if not 0 <= args.eta <= 1:
            raise MinigenError(f"--eta {args.eta}: must be in [0, 1]")

        def ddpm_sample(shape, y, x_T=None, intermediates=False, sampler=args.sampler, eta=args.eta):
            return diffusion.sample(net, shape, sampler=sampler, steps=steps, eta=eta, spacing=args.spacing,
                                    x_T=x_T, generator=generator, clip_x0=not args.no_clip,
                                    dynamic_threshold=args.dynamic_threshold, variance=args.variance,
                                    y=y.to(device) if y is not None else None,
                                    guidance=args.guidance if K else 1.0, null_label=K if K else None,
                                    negative_y=negative, device=device, return_intermediates=intermediates,
                                    progress=not args.no_progress, loss_fn=colour, loss_scale=args.color_scale,
                                    classifier=classifier, classifier_scale=args.classifier_scale)

        colour = None
        if args.color_target:
            try:
                rgb = [float(v) for v in args.color_target.split(",")]
            except ValueError:
                raise MinigenError(f"--color-target {args.color_target}: give numbers in [0, 1], e.g. 1,0,0") from None
            if len(rgb) != C or not all(0 <= v <= 1 for v in rgb):
                raise MinigenError(f"--color-target {args.color_target}: give {C} value(s) in [0, 1] for this model")
            colour = colour_loss([2 * v - 1 for v in rgb])
        classifier = None
        if args.classifier:
            if labels is None:
                raise MinigenError("--classifier steers towards a class: this model has no classes")
            vstate = load_checkpoint(args.classifier, kind="vit")
            classifier = ViT(ViTConfig(**vstate["config"]))
            classifier.load_state_dict(vstate["model"])
            classifier = classifier.to(device).eval()
            if not classifier.config.time_conditioned:
                print(f"note: {args.classifier} was trained on clean images; classifier guidance needs one "
                      "trained with train_vit.py --noisy")
        result = ddpm_sample((n, C, H, W), labels, intermediates=want_frames)
        x, inter = result if want_frames else (result, None)
        method = f"{args.sampler} {steps} steps"
    seconds = time.perf_counter() - start

    # ---- pictures -----------------------------------------------------------------------------
    out = Path(args.out)
    per_row = 10 if K and args.class_ is None else None
    row_labels = None
    if K and args.class_ is None and n % K == 0:
        per_row = n // K
        row_labels = [str(c)[:10] for c in classes] if classes else [str(k) for k in range(K)]
    print(f"wrote {save_grid(x, out, nrow=per_row, row_labels=row_labels)}")
    if args.strip:
        picks = torch.linspace(0, len(inter["t"]) - 1, 10).round().long()
        path = save_strip(inter["x_t"][picks, 0], out.with_name(out.stem + "_strip.png"),
                          captions=[f"t={inter['t'][i]}" for i in picks.tolist()])
        print(f"wrote {path}")
    if args.gif:
        picks = torch.linspace(0, len(inter["t"]) - 1, min(40, len(inter["t"]))).round().long()
        path = save_gif([inter["x_t"][i] for i in picks.tolist()], out.with_suffix(".gif"))
        print(f"wrote {path}")
    print(f"{method}: {n} images in {seconds:.2f}s ({n / seconds:.1f} images/s, {seconds / n:.4f} s/image"
          + (", including the compilation" if args.compile else "") + ")")

    # ---- a walk between two latents -----------------------------------------------------------
    if args.interpolate:
        if args.interpolate < 2:
            raise MinigenError(f"--interpolate {args.interpolate}: ask for at least 2 frames")
        frames = args.interpolate
        label = labels[:1].expand(frames) if labels is not None else None
        fractions = torch.linspace(0, 1, frames)
        if state["kind"] == "gan":
            ends = torch.randn(2, model.config.z_dim, generator=generator, device=device)
            with torch.no_grad():
                walk = net(slerp(ends[0], ends[1], fractions).to(device), label.to(device) if K else None)
        else:
            ends = torch.randn(2, C, H, W, generator=generator, device=device)
            walk = ddpm_sample((frames, C, H, W), label, x_T=slerp(ends[0], ends[1], fractions).to(device),
                               sampler="ddim", eta=0.0)
        strip = save_strip(walk, out.with_name(out.stem + "_interp.png"),
                           captions=[f"{s:.2f}" for s in fractions.tolist()])
        gif = save_gif(list(walk) + list(walk.flip(0)), out.with_name(out.stem + "_interp.gif"), duration_ms=120)
        print(f"wrote {strip} and {gif} (spherical interpolation between two latents)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
