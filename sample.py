"""Draw samples from a trained checkpoint (DDPM or GAN): the model is rebuilt from the config in it.

    python sample.py --ckpt runs/ddpm/last.pt                       # a grid, one row per class
    python sample.py --ckpt runs/ddpm/last.pt --class 7 -n 16       # sixteen 7s
    python sample.py --ckpt runs/ddpm/last.pt --sampler ddpm --steps 1000 --guidance 1
    python sample.py --ckpt runs/ddpm/last.pt --sampler dpm++ --steps 10      # DPM-Solver++(2M): few steps
    python sample.py --ckpt runs/ddpm/last.pt --class 8 --negative-class 3 --guidance 4
    python sample.py --ckpt runs/ddpm/last.pt --strip --gif         # the reverse process, as a strip and a GIF
    python sample.py --ckpt runs/gan/last.pt --min-d-prob 0.7       # GAN samples D scores as real
    python sample.py --ckpt runs/gan/last.pt --interpolate 10       # a walk between two latents (also DDIM)
    python sample.py --ckpt runs/t2i/last.pt --prompt "a large blue circle in the centre on black" \
                     --prompt "a small red cross at the top left on white" --negative-prompt "red"   # text to image

Editing with a diffusion checkpoint (minigen/editing.py), each written as a side-by-side picture:
    python sample.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask-box 0,14,28,28   # RePaint
    python sample.py --ckpt runs/ddpm/last.pt --inpaint digit.png --mask mask.png         # white = regenerate
    python sample.py --ckpt runs/ddpm/last.pt --init digit.png --strength 0.6 --class 3  # SDEdit
    python sample.py --ckpt runs/ddpm/last.pt --init digit.png --class 3 --sampler ddpm     # any sampler edits
    python sample.py --ckpt runs/ddpm/last.pt --invert digit.png --class 5               # DDIM inversion, edit
    python sample.py --ckpt runs/shapes/last.pt --color-target 1,0,0 --color-scale 20     # guidance by a loss
    python sample.py --ckpt runs/cshapes/last.pt --clip runs/clip/last.pt --clip-guidance "a small blue circle ..."

A latent diffusion checkpoint (train_ldm.py) carries its autoencoder: every flag
above works on it the same way (the sampler runs on latents; pictures are decoded; an edited
image is encoded first, and inpainting's mask is taken down to the latent grid).

Same --seed, same images. A missing, corrupt, code-carrying or wrong-kind checkpoint is
reported in one line, with exit status 2.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from minigen import pipelines
from minigen.cli import Parser, at_least, between, interval, number, run, writable_folder, writable_image
from minigen.data import to_float
from minigen.data.readers import box_mask, read_image, read_mask
from minigen.device import pick_device
from minigen.diffusion import SAMPLERS, SPACINGS, ClassifierGuidance, Frames, LossGuidance, SamplerConfig
from minigen.diffusion.editing import REPAINT_JUMP, REPAINT_RESAMPLE, clip_loss, colour_loss
from minigen.diffusion.samplers import VARIANCES
from minigen.errors import MinigenError
from minigen.evaluation.metrics import psnr, ssim
from minigen.images import mask_panel, save_gif, save_grid, save_npz, save_pngs, save_strip
from minigen.interpolation import slerp

KINDS = ("ddpm", "gan")
# Flags only a diffusion checkpoint uses (their defaults are None/False so that giving one is seen).
DIFFUSION_FLAGS = ("sampler", "steps", "eta", "spacing", "variance", "guidance", "guidance_interval", "guidance_rescale",
                   "negative_class", "no_clip", "dynamic_threshold", "strip", "gif", "inpaint", "init", "invert",
                   "prompt", "prompts_file", "negative_prompt",
                   "classifier", "color_target", "clip_guidance")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    count = number(int, at_least(1))
    p.add_argument("--ckpt", required=True, help="checkpoint written by train_ddpm.py, train_ldm.py, distill.py or train_gan.py")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="ancestral DDPM, DDIM, DPM-Solver++(2M), or cm: multistep consistency sampling for a "
                        "consistency student (default: ddim; ddpm for --inpaint, as RePaint)")
    p.add_argument("--steps", type=count, default=None,
                   help="network evaluations (default: 50 for ddim, or a distilled student's own; 20 for dpm++; "
                        "T for ddpm; 100 for --inpaint)")
    p.add_argument("--eta", type=number(float, between(0, 1)), default=None, help="DDIM noise: 0 deterministic, 1 DDPM-like (default: 0)")
    p.add_argument("--spacing", choices=SPACINGS, default=None, help="which timesteps to visit (default: trailing)")
    p.add_argument("--variance", choices=VARIANCES, default=None,
                   help="DDPM variance: posterior β̃ (small) or β (large) (default: small)")
    p.add_argument("--guidance", type=number(float), default=None, help="classifier-free guidance scale w; 1 = none (default: 3)")
    p.add_argument("--guidance-interval", type=interval, default=None, metavar="LOW,HIGH",
                   help="guide only at noise levels σ in (LOW, HIGH], e.g. 0.28,5.42 (Kynkäänniemi et al. 2024)")
    p.add_argument("--guidance-rescale", type=number(float, between(0, 1)), default=None, metavar="PHI",
                   help="rescaled guidance: bring the guided output back to the conditional one's std, mixed "
                        "in with weight PHI, e.g. 0.7 (Lin et al. 2024) (default: 0, off)")
    p.add_argument("--class", dest="class_", type=number(int, at_least(0)), default=None,
                   help="generate this class only (default: a row per class)")
    p.add_argument("--negative-class", type=number(int, at_least(0)), default=None,
                   help="steer away from this class (a 'negative prompt': replaces the unconditional pass)")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a text-conditional model: what to draw (repeatable: a row per prompt)")
    p.add_argument("--prompts-file", metavar="FILE", help="more prompts, one a line")
    p.add_argument("--negative-prompt", metavar="TEXT", help="steer away from this prompt (replaces the empty prompt "
                                                             "of classifier-free guidance)")
    p.add_argument("-n", type=count, default=None, help="number of images (default: 10 per class, 8 per prompt, or 64; "
                                                        "4 when editing)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same images (default: 0)")
    p.add_argument("--out", default="samples.png", help="output grid (default: samples.png)")
    p.add_argument("--save-npz", metavar="FILE", help="also write the samples as uint8 (N, H, W, C) `images` with "
                                                      "their `labels`, the layout other evaluation tools read")
    p.add_argument("--save-dir", metavar="DIR", help="also write one PNG per sample into DIR")
    p.add_argument("--strip", action="store_true", help="also write OUT_strip.png: the reverse process of the first image")
    p.add_argument("--gif", action="store_true", help="also write OUT.gif: the whole grid denoising")
    p.add_argument("--no-clip", action="store_true", help="do not clip the predicted x_0 to [-1, 1]")
    p.add_argument("--dynamic-threshold", type=number(float, between(0, 1, low_open=True)), default=None, metavar="P",
                   help="dynamic thresholding of x_0 at percentile P, e.g. 0.995 (Saharia et al. 2022)")
    p.add_argument("--min-d-prob", type=number(float, between(0, 1)), default=None, metavar="P",
                   help="GAN only: keep samples the discriminator scores as real with probability >= P "
                        "(e.g. 0.7), drawing more until there are enough")
    p.add_argument("--interpolate", type=number(int, at_least(2)), default=None, metavar="N",
                   help="also write OUT_interp.png and .gif: N steps of a spherical walk between two latents "
                        "(GAN z, or DDIM x_T with eta 0)")
    e = p.add_argument_group("editing and guidance (diffusion checkpoints; every sampler flag above applies)")
    e.add_argument("--inpaint", metavar="IMAGE", help="regenerate the masked part of IMAGE (RePaint)")
    e.add_argument("--mask", metavar="MASK", help="grayscale mask of IMAGE's size: white = regenerate")
    e.add_argument("--mask-box", metavar="x0,y0,x1,y1", help="regenerate this box (pixels of the model's size)")
    e.add_argument("--jump-length", type=count, default=None, help=f"RePaint: steps per resampling block (default: {REPAINT_JUMP})")
    e.add_argument("--resample", type=count, default=None, help=f"RePaint: times each block is denoised (default: {REPAINT_RESAMPLE})")
    e.add_argument("--init", metavar="IMAGE", help="image-to-image (SDEdit): start from IMAGE noised to --strength")
    e.add_argument("--strength", type=number(float, between(0, 1, low_open=True)), default=None, help="SDEdit noise level in (0, 1] (default: 0.6)")
    e.add_argument("--invert", metavar="IMAGE", help="DDIM-invert IMAGE to x_T, reconstruct it (PSNR, SSIM) "
                                                     "and re-sample the same x_T with --class")
    e.add_argument("--classifier", metavar="CKPT", help="classifier guidance by a ViT trained with "
                                                        "train_vit.py --noisy (Dhariwal & Nichol 2021)")
    e.add_argument("--classifier-scale", type=number(float), default=None, help="classifier guidance scale s (default: 1)")
    e.add_argument("--color-target", metavar="R,G,B", help="guide samples towards this colour (values in [0, 1])")
    e.add_argument("--color-scale", type=number(float), default=None, help="strength of the colour guidance (default: 20)")
    e.add_argument("--clip-guidance", metavar="PROMPT", help="CLIP guidance: steer every sample towards PROMPT in the "
                                                           "joint space of --clip (train_clip.py)")
    e.add_argument("--clip", metavar="CKPT", help="the CLIP checkpoint for --clip-guidance")
    e.add_argument("--clip-scale", type=number(float), default=None, help="strength of the CLIP guidance (default: 10)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network with frozen weights (the per-step call, not the loop)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="CUDA only: compile the per-step network call and replay it as a CUDA graph "
                        "(mode reduce-overhead); 3.6x eager DDIM on an H200 (README, Performance)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_flags(args, kind: str) -> None:
    """Every flag acts or is refused: one line naming a flag that does not apply here."""
    flag = lambda name: "--" + name.rstrip("_").replace("_", "-")
    given = lambda name: getattr(args, name) not in (None, False)
    if kind == "gan":
        for name in DIFFUSION_FLAGS:
            if given(name):
                raise MinigenError(f"{flag(name)} is for diffusion checkpoints; {args.ckpt} is a GAN"
                                   + (" (a GAN has no reverse process: try --interpolate)" if name in ("strip", "gif") else ""))
    elif args.min_d_prob is not None:
        raise MinigenError("--min-d-prob needs a GAN checkpoint (a diffusion model has no discriminator)")
    if given("color_target") and given("clip_guidance"):
        raise MinigenError("--color-target and --clip-guidance: one loss guidance at a time")
    editing = [name for name in ("inpaint", "init", "invert") if given(name)]
    if len(editing) > 1:
        raise MinigenError(f"--{editing[0]} and --{editing[1]}: one edit at a time")
    needs = {"mask": "inpaint", "mask_box": "inpaint", "jump_length": "inpaint", "resample": "inpaint",
             "strength": "init", "classifier_scale": "classifier", "color_scale": "color_target",
             "clip": "clip_guidance", "clip_scale": "clip_guidance"}
    for name, parent in needs.items():
        if given(name) and not given(parent):
            raise MinigenError(f"{flag(name)} goes with {flag(parent)}")
    for name in ("strip", "gif", "interpolate", "save_npz", "save_dir"):
        if given(name) and editing:
            raise MinigenError(f"{flag(name)} draws plain samples; it does not combine with --{editing[0]}")
    sampler = args.sampler or ("ddpm" if args.inpaint else "ddim")
    if args.eta is not None and sampler != "ddim":
        own = {"ddpm": "has its own (see --variance)", "dpm++": "is deterministic", "cm": "noises x̂_0 afresh at every step"}
        raise MinigenError(f"--eta is DDIM's noise; the {sampler} sampler {own[sampler]}")
    if args.variance is not None and sampler != "ddpm":
        raise MinigenError("--variance is the ddpm sampler's; DDIM's noise is --eta")


# ---- diffusion --------------------------------------------------------------------------------

def conditioner(args, pipe):
    """labels -> the network's keyword arguments. A text-conditional model's "labels" index the
    prompts (args.prompts), so every path below (rows, edits, walks) treats both alike."""
    if pipe.kind != "ddpm" or pipe.tokenizer is None:
        return pipe.condition
    return lambda labels: pipe.prompts([args.prompts[i] for i in labels.tolist()])


def make_denoiser(args, pipe, labels, net):
    """The network with every guidance asked for: classifier-free (with the negative class),
    loss (colour) and classifier guidance, in that order (thresholding comes with the sampler)."""
    C, K, device = pipe.image_shape[0], pipe.num_classes, pipe.device
    # A latent model's x̂_0 is a latent: a loss on pixels is taken through the decoder (latent.pixel_loss);
    # a classifier of noisy pixels and a pixel-range threshold have no meaning on noisy latents.
    for flag, given in (("--classifier", args.classifier), ("--dynamic-threshold", args.dynamic_threshold)):
        if given and pipe.latent is not None:
            raise MinigenError(f"{flag} acts on noisy pixels during sampling; {args.ckpt} samples latents "
                               "(latent diffusion)")
    in_pixels = (lambda loss: loss) if pipe.latent is None else pipe.latent.pixel_loss
    negative = None
    if args.negative_class is not None:
        negative = pipe.condition(torch.full((len(labels),), args.negative_class))
    if args.negative_prompt is not None:
        negative = pipe.prompts([args.negative_prompt] * len(labels))
    denoiser = pipe.denoiser(args.guidance if args.guidance is not None else 3.0, negative, network=net,
                             sigma_interval=args.guidance_interval, rescale=args.guidance_rescale or 0.0)
    if args.color_target:
        try:
            rgb = [float(v) for v in args.color_target.split(",")]
        except ValueError:
            raise MinigenError(f"--color-target {args.color_target}: give numbers in [0, 1], e.g. 1,0,0") from None
        if len(rgb) != C or not all(0 <= v <= 1 for v in rgb):
            raise MinigenError(f"--color-target {args.color_target}: give {C} value(s) in [0, 1] for this model")
        scale = args.color_scale if args.color_scale is not None else 20.0
        if scale:
            denoiser = LossGuidance(denoiser, in_pixels(colour_loss([2 * v - 1 for v in rgb])), scale)
    if args.clip_guidance:
        if not args.clip:
            raise MinigenError("--clip-guidance needs --clip CKPT, a CLIP from train_clip.py")
        clip = pipelines.load(args.clip, device, kind="clip")
        if clip.image_shape != pipe.image_shape:
            raise MinigenError(f"--clip {args.clip}: sees {'x'.join(map(str, clip.image_shape))} images; this model makes "
                               f"{'x'.join(map(str, pipe.image_shape))}")
        scale = args.clip_scale if args.clip_scale is not None else 10.0
        if scale:
            target = clip.encode_text([args.clip_guidance])[0]
            denoiser = LossGuidance(denoiser, in_pixels(clip_loss(clip.encode_image, target)), scale)
    if args.classifier:
        if not K:
            raise MinigenError("--classifier steers towards a class: this model has no classes")
        judge = pipelines.load(args.classifier, device, kind="vit").network
        if (judge.config.image_channels, *judge.config.image_size) != pipe.image_shape:
            raise MinigenError(f"--classifier {args.classifier}: judges {judge.config.image_channels}x"
                               f"{'x'.join(map(str, judge.config.image_size))} images; this model makes "
                               f"{'x'.join(map(str, pipe.image_shape))}")
        if judge.config.num_classes != K:
            raise MinigenError(f"--classifier {args.classifier}: knows {judge.config.num_classes} classes; "
                               f"this model has {K}")
        if not judge.config.time_conditioned:
            print(f"note: {args.classifier} was trained on clean images; classifier guidance needs one "
                  "trained with train_vit.py --noisy")
        scale = args.classifier_scale if args.classifier_scale is not None else 1.0
        if scale:
            denoiser = ClassifierGuidance(denoiser, judge, scale, labels.to(device))
    return denoiser


def edit(args, pipe, sampler: SamplerConfig, denoiser, labels, generator) -> tuple:
    """Inpainting, SDEdit, DDIM inversion with the sampling loop's pieces: panels, captions, what.
    A latent model edits μ(x)·s of the image (`to_latent`) and decodes the result (`to_pixels`)."""
    (C, H, W), device = pipe.image_shape, pipe.device
    progress = not args.no_progress
    condition = conditioner(args, pipe)
    cond = condition(labels)
    image = to_float(torch.from_numpy(read_image(args.inpaint or args.init or args.invert, C, (H, W))))[None].to(device)
    n = len(labels)
    loop = {"cond": cond, "generator": generator, "progress": progress}
    if args.inpaint:
        keep = box_mask(args.mask_box, (H, W)) if args.mask_box else None
        if keep is None:
            if not args.mask:
                raise MinigenError("--inpaint needs --mask MASK or --mask-box x0,y0,x1,y1")
            keep = read_mask(args.mask, args.inpaint, (H, W))
        keep = torch.from_numpy(keep)[None, None].to(device)                # (1, 1, H, W)
        jump, resample = args.jump_length or REPAINT_JUMP, args.resample or REPAINT_RESAMPLE
        result = pipe.inpaint(sampler, denoiser, image, keep, n, jump, resample, **loop)
        shown = image * keep + (1 - keep) * -1                              # the known part only
        panels = torch.cat([image, mask_panel(keep, image), shown, result])
        captions = ["input", "mask", "kept"] + [f"result {i + 1}" for i in range(n)]
        return panels, captions, f"inpainting (RePaint, {sampler.sampler} {sampler.steps} steps, jump {jump}, resample {resample})"
    if args.init:
        strength = args.strength if args.strength is not None else 0.6
        result = pipe.sdedit(sampler, denoiser, image, strength, n, **loop)
        return torch.cat([image, result]), ["input"] + [f"s={strength}"] * n, f"SDEdit at strength {strength} ({sampler.sampler})"
    # Inversion: the image's class is not given, so invert (and reconstruct) with the unconditional model.
    x_T, back = pipe.invert(sampler, image, cond, progress)
    print(f"DDIM inversion, {sampler.steps} steps: reconstruction PSNR {psnr(back, image):.2f} dB, "
          f"SSIM {ssim(back, image):.4f}")
    panels, captions = torch.cat([image, back]), ["input", "reconstructed"]
    if pipe.latent is None:                                                 # x_T is a picture only in pixel space
        panels, captions = torch.cat([image, x_T.clamp(-1, 1), back]), ["input", "x_T", "reconstructed"]
    if pipe.num_classes and args.class_ is not None or args.prompts:
        edited = pipe.to_pixels(sampler.sample(denoiser, x_T, cond=condition(labels[:1]), generator=generator,
                                               progress=False))
        name = args.prompts[0][:24] if args.prompts else pipe.classes[args.class_] if pipe.classes else args.class_
        panels, captions = torch.cat([panels, edited]), captions + [f"as {name}"]
    return panels, captions, "DDIM inversion"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = writable_image(args.out)
    if args.save_npz:
        if not args.save_npz.endswith(".npz"):
            raise MinigenError(f"--save-npz {args.save_npz}: give a file name ending in .npz")
        writable_folder(Path(args.save_npz).parent, flag="--save-npz")
    if args.save_dir:
        writable_folder(args.save_dir, flag="--save-dir")
    for name in ("interpolate",) if args.interpolate else ():
        writable_image(out.with_name(out.stem + "_interp.png"))
    device, reason = pick_device(args.device)
    print(f"device: {reason}")
    pipe = pipelines.load(args.ckpt, device, kind=KINDS)
    (C, H, W), K, classes = pipe.image_shape, pipe.num_classes, pipe.classes
    about = f"{C}x{H}x{W}, {len(classes) if K else 'no'} classes"
    if pipe.kind == "gan":
        print(f"model: DCGAN at step {pipe.step}, {about}")
    else:
        d = pipe.diffusion
        latent = (f", latent diffusion on {'x'.join(map(str, pipe.noise_shape))} latents (f = {pipe.latent.factor})"
                  if pipe.latent is not None else "")
        print(f"model: DDPM at step {pipe.step}, {about}, prediction {d.prediction}, T = {d.T}{latent}")
    check_flags(args, pipe.kind)
    for name, value in (("--class", args.class_), ("--negative-class", args.negative_class)):
        if value is not None and not (0 <= value < K):
            raise MinigenError(f"{name} {value}: this model has " + (f"classes 0..{K - 1}" if K else "no classes"))
    # ---- prompts, for a text-conditional model --------------------------------------------------
    text = pipe.kind == "ddpm" and pipe.tokenizer is not None
    args.prompts = list(args.prompt or [])
    if args.prompts_file:
        try:
            args.prompts += [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise MinigenError(f"--prompts-file {args.prompts_file}: cannot read it ({type(e).__name__})") from None
    if text:
        if args.class_ is not None or args.negative_class is not None:
            raise MinigenError(f"{args.ckpt} is text-conditional: say what to draw with --prompt TEXT, not a class")
        if not args.prompts:
            raise MinigenError(f"{args.ckpt} is text-conditional: say what to draw with --prompt TEXT "
                               "(or --prompts-file FILE)")
        pipe.prompts(args.prompts + ([args.negative_prompt] if args.negative_prompt else []))   # unknown words: exit 2 now
        print(f"prompts: {len(args.prompts)}; vocabulary of {len(pipe.tokenizer)} words")
    elif args.prompts or args.negative_prompt:
        raise MinigenError(f"--prompt and --negative-prompt need a text-conditional model (train_ldm.py --condition "
                           f"text); {args.ckpt} is not")
    if args.guidance is not None and not K and not text and pipe.kind == "ddpm":
        raise MinigenError("--guidance is classifier-free guidance, which needs a class-conditional model; "
                           f"{args.ckpt} is unconditional")
    editing = args.inpaint or args.init or args.invert
    if args.class_ is None and K and (args.inpaint or args.init):
        raise MinigenError("this model is class-conditional: say which class to draw with --class K")
    if text and len(args.prompts) > 1 and editing:
        raise MinigenError("an edit follows one --prompt")

    # ---- labels: a row per class, or one class -------------------------------------------
    if args.invert and args.n not in (None, 1):
        raise MinigenError(f"-n {args.n}: --invert works on one image")
    if K and args.class_ is None and not editing:
        n = args.n if args.n is not None else 10 * K
        labels = torch.arange(n) * K // n                     # rows of equal length, class by class
    elif text and not editing:
        P = len(args.prompts)
        n = args.n if args.n is not None else 8 * P
        labels = torch.arange(n) * P // n                     # rows of equal length, prompt by prompt
    else:
        n = args.n if args.n is not None else (1 if args.invert else 4 if editing else 16 if K else 64)
        labels = torch.full((n,), args.class_ if args.class_ is not None else 0)

    # Sampling never changes the weights, so inductor may treat them as constants ("freezing"): it
    # folds them into the graph and pre-packs convolution weights for oneDNN. Only the per-step
    # network call is compiled; the sampling loop stays Python (README, Performance).
    model = pipe.generator if pipe.kind == "gan" else pipe.network
    # With --cuda-graphs the call is captured once as a CUDA graph and replayed: one launch per
    # step instead of hundreds, which is what a small network at a small batch waits on.
    if args.cuda_graphs and device.type != "cuda":
        raise MinigenError("--cuda-graphs: replays CUDA kernels; it needs a CUDA device")
    net = (torch.compile(model, mode="reduce-overhead") if args.cuda_graphs
           else torch.compile(model, options={"freezing": True}) if args.compile else model)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    frames = Frames() if args.strip or args.gif else None
    if pipe.kind == "gan":
        x, drawn = pipe.sample(labels, n, generator, args.min_d_prob, network=net)
        method = "GAN" + (f", kept {n} of {drawn} draws with D(x) >= {args.min_d_prob}" if args.min_d_prob is not None else "")
    else:
        sampler_name = args.sampler or ("ddpm" if args.inpaint else "ddim")
        # dpm++: Lu et al.'s 15-20 for guided sampling; a distilled student: the steps it learned (distill.py)
        default_steps = {"ddim": pipe.distilled_steps or 50, "dpm++": 20, "ddpm": d.T, "cm": pipe.distilled_steps or 1}[sampler_name]
        steps = args.steps if args.steps is not None else (100 if args.inpaint else default_steps)
        if not 1 <= steps <= d.T:
            raise MinigenError(f"--steps {steps}: must be between 1 and T = {d.T}")
        eta = args.eta if args.eta is not None else 0.0
        if not 0 <= eta <= 1:
            raise MinigenError(f"--eta {eta}: must be in [0, 1]")
        sampler = SamplerConfig(sampler_name, steps, eta, args.spacing or "trailing", args.variance or "small",
                                pipe.clip_x0 and not args.no_clip, args.dynamic_threshold)
        denoiser = make_denoiser(args, pipe, labels, net)
        if editing:
            panels, captions, what = edit(args, pipe, sampler, denoiser, labels, generator)
            path = save_grid(panels, out, nrow=len(panels), captions=captions, scale=max(1, 96 // max(H, W)))
            print(f"wrote {path}: {what}, {time.perf_counter() - start:.1f}s")
            return 0
        x = pipe.generate(sampler, denoiser, n, generator, cond=conditioner(args, pipe)(labels), callback=frames,
                          progress=not args.no_progress)
        method = f"{sampler.sampler} {steps} steps"
    seconds = time.perf_counter() - start

    # ---- pictures -----------------------------------------------------------------------------
    per_row = 10 if K and args.class_ is None else None
    row_labels = None
    if K and args.class_ is None and n % K == 0:
        per_row = n // K
        row_labels = [str(c)[:10] for c in classes] if classes else [str(k) for k in range(K)]
    if text and n % len(args.prompts) == 0:
        per_row, row_labels = n // len(args.prompts), [p[:40] for p in args.prompts]
    print(f"wrote {save_grid(x, out, nrow=per_row, row_labels=row_labels)}")
    if args.save_npz:
        print(f"wrote {save_npz(x, args.save_npz, labels if K else None)} ({n} samples, uint8 N x H x W x C)")
    if args.save_dir:
        names = [str(classes[k]) if classes else str(k) for k in labels.tolist()] if K else None
        print(f"wrote {n} PNGs into {save_pngs(x, args.save_dir, names)}")
    # The reverse process as x_t; a latent model's as the decoded x̂_0 (a decoded noisy latent is no picture).
    shown = "x_t" if pipe.kind == "gan" or pipe.latent is None else "x0"
    if args.strip:
        strip, captions = frames.strip(10, of=shown)
        print(f"wrote {save_strip(pipe.to_pixels(strip), out.with_name(out.stem + '_strip.png'), captions=captions)}")
    if args.gif:
        kept = frames.x_t if shown == "x_t" else frames.x0
        print(f"wrote {save_gif([pipe.to_pixels(kept[i]) for i in frames.picks(40)], out.with_suffix('.gif'))}")
    print(f"{method}: {n} images in {seconds:.2f}s ({n / seconds:.1f} images/s, {seconds / n:.4f} s/image"
          + (", including the compilation" if args.compile or args.cuda_graphs else "") + ")")

    # ---- a walk between two latents -----------------------------------------------------------
    if args.interpolate:
        frames_n = args.interpolate
        label = labels[:1].expand(frames_n)
        fractions = torch.linspace(0, 1, frames_n)
        if pipe.kind == "gan":
            ends = pipe.latent(2, generator)
            with torch.no_grad():
                walk = net(slerp(ends[0], ends[1], fractions).to(device), label.to(device) if K else None)
        else:
            ends = pipe.noise(2, generator)
            ddim = SamplerConfig("ddim", sampler.steps, 0.0, sampler.spacing, clip_x0=sampler.clip_x0,
                                 dynamic_threshold=sampler.dynamic_threshold)
            walk = pipe.to_pixels(ddim.sample(make_denoiser(args, pipe, label, net),
                                              slerp(ends[0], ends[1], fractions).to(device), cond=conditioner(args, pipe)(label),
                                              generator=generator, progress=not args.no_progress))
        strip = save_strip(walk, out.with_name(out.stem + "_interp.png"),
                           captions=[f"{s:.2f}" for s in fractions.tolist()])
        gif = save_gif(list(walk) + list(walk.flip(0)), out.with_name(out.stem + "_interp.gif"), duration_ms=120)
        print(f"wrote {strip} and {gif} (spherical interpolation between two latents)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
