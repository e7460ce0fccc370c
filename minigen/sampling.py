"""What sample.py and edit.py share: the settings of a sampling run, resolved against the
checkpoint in one place, and the guided denoiser they ask for.

    cfg, given = cli.parse_config(parser, SampleConfig)       # a SamplingConfig, and the flags typed
    pipe = pipelines.load(cfg.ckpt)
    cfg = resolve(cfg, given, pipe)                           # checked; defaults that depend on the model
    denoiser = make_denoiser(cfg, pipe, labels, network)      # classifier-free, loss and classifier guidance
    x = pipe.generate(sampler_config(cfg, pipe), denoiser, n, generator, cond=conditioner(cfg, pipe)(labels))

Each setting is declared once, as a field below, with its default, range and help. A setting
whose default depends on the model or on the job (the sampler for inpainting, the steps of a
distilled student) is resolved in `resolve`, and nowhere else. A flag that does not apply to
the checkpoint (a diffusion flag for a GAN, --eta for a sampler without η) is refused there in
one line.
"""

import dataclasses
import shlex
import sys
from dataclasses import dataclass

import torch

from . import pipelines
from .cli import GUIDANCE, LOSS_SCALE, SEED, SEED_MAX, at_least, between, flag_of, interval, setting
from .diffusion import SAMPLERS, SPACINGS, ClassifierGuidance, LossGuidance, SamplerConfig
from .diffusion.editing import clip_loss, colour_loss
from .diffusion.samplers import VARIANCES
from .errors import MinigenError
from .seeds import ImageSeeds

# Settings only a diffusion checkpoint uses: given with a GAN, each is refused by name.
DIFFUSION_ONLY = ("sampler", "steps", "eta", "spacing", "variance", "guidance", "guidance_interval", "guidance_rescale",
                  "negative_class", "no_clip", "dynamic_threshold", "prompt", "prompts_file", "negative_prompt",
                  "classifier", "classifier_scale", "color_target", "color_scale", "clip_guidance", "clip", "clip_scale")
PROMPTS_FILE_LIMIT = 2**20                # bytes of --prompts-file
# Settings that only mean something beside another one.
NEEDS = {"classifier_scale": "classifier", "color_scale": "color_target", "clip": "clip_guidance",
         "clip_scale": "clip_guidance"}


@dataclass
class SamplingConfig:
    ckpt: str = setting(None, "checkpoint written by train_ddpm.py, train_ldm.py, distill.py or train_gan.py",
                        required=True)
    # ---- the sampler --------------------------------------------------------------------------
    sampler: str = setting("ddim", "ancestral DDPM, DDIM, DPM-Solver++(2M), or cm: multistep consistency sampling "
                                   "for a consistency student (ddpm for inpainting, as RePaint)", choices=SAMPLERS)
    steps: int | None = setting(None, "network evaluations (default: 50 for ddim, or a distilled student's own; 20 "
                                      "for dpm++; T for ddpm; 100 for inpainting)", check=at_least(1))
    eta: float = setting(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like", check=between(0, 1))
    spacing: str = setting("trailing", "which timesteps to visit", choices=SPACINGS)
    variance: str = setting("small", "DDPM variance: posterior β̃ (small) or β (large)", choices=VARIANCES)
    no_clip: bool = setting(False, "do not clip the predicted x_0 to [-1, 1]", flag="--no-clip")
    dynamic_threshold: float | None = setting(None, "dynamic thresholding of x_0 at percentile P, e.g. 0.995 "
                                                    "(Saharia et al. 2022)", check=between(0, 1, low_open=True),
                                              metavar="P")
    # ---- what to draw, and classifier-free guidance ---------------------------------------------
    class_: int | None = setting(None, "generate this class only (default: a row per class)", check=at_least(0),
                                 flag="--class", metavar="K")
    prompt: list | None = setting(None, "a text-conditional model: what to draw (repeatable: a row per prompt)",
                                  repeat=True, metavar="TEXT")
    prompts_file: str | None = setting(None, "more prompts, one a line", metavar="FILE")
    guidance: float = setting(3.0, "classifier-free guidance scale w; 1 = none", check=GUIDANCE)
    negative_class: int | None = setting(None, "steer away from this class (a 'negative prompt': replaces the "
                                               "unconditional pass)", check=at_least(0), metavar="K")
    negative_prompt: str | None = setting(None, "steer away from this prompt (replaces the empty prompt of "
                                                "classifier-free guidance)", metavar="TEXT")
    guidance_interval: tuple | None = setting(None, "guide only at noise levels σ in (LOW, HIGH], e.g. 0.28,5.42 "
                                                    "(Kynkäänniemi et al. 2024)", parse=interval, metavar="LOW,HIGH")
    guidance_rescale: float = setting(0.0, "rescaled guidance: bring the guided output back to the conditional one's "
                                           "std, mixed in with weight PHI, e.g. 0.7 (Lin et al. 2024; 0: off)",
                                      check=between(0, 1), metavar="PHI")
    # ---- more guidance, as wrappers of the denoiser ------------------------------------------------
    classifier: str | None = setting(None, "classifier guidance by a ViT trained with train_vit.py --noisy "
                                           "(Dhariwal & Nichol 2021)", metavar="CKPT")
    classifier_scale: float = setting(1.0, "classifier guidance scale s", check=LOSS_SCALE)
    color_target: str | None = setting(None, "guide samples towards this colour (values in [0, 1])", metavar="R,G,B")
    color_scale: float = setting(20.0, "strength of the colour guidance", check=LOSS_SCALE)
    clip_guidance: str | None = setting(None, "CLIP guidance: steer every sample towards PROMPT in the joint space "
                                              "of --clip (train_clip.py)", metavar="PROMPT")
    clip: str | None = setting(None, "the CLIP checkpoint for --clip-guidance", metavar="CKPT")
    clip_scale: float = setting(10.0, "strength of the CLIP guidance", check=LOSS_SCALE)
    # ---- how it runs ------------------------------------------------------------------------------
    n: int | None = setting(None, "number of images", check=between(1, 10_000), flag="-n")
    seed: int = setting(0, "random seed: same seed, same images", check=SEED)
    image_seeds: bool = setting(False, "image i draws all its noise from seed + i, so -n 1 --seed (seed + i) makes it "
                                       "again alone (as the studio does)")
    device: str | None = setting(None, "cpu | cuda | mps (default: the best available)")
    compile: bool = setting(False, "torch.compile the network with frozen weights (the per-step call, not the loop)")
    cuda_graphs: bool = setting(False, "CUDA only: compile the per-step network call and replay it as a CUDA graph "
                                       "(mode reduce-overhead); 3.6x eager DDIM on an H200 (docs/performance.md)")
    progress: bool = setting(True, "show a progress bar")


def command(script: str, argv=None) -> str:
    """The command line that ran `script`, quoted so that a shell runs it again."""
    return "python " + shlex.join([script, *(sys.argv[1:] if argv is None else argv)])


def describe(pipe) -> str:
    """One line about the model a checkpoint holds."""
    (C, H, W), K = pipe.image_shape, pipe.num_classes
    about = f"{C}x{H}x{W}, {len(pipe.classes) if K else 'no'} classes"
    if pipe.kind == "gan":
        return f"model: DCGAN at step {pipe.step}, {about}"
    d = pipe.diffusion
    latent = (f", latent diffusion on {'x'.join(map(str, pipe.noise_shape))} latents (f = {pipe.latent.factor})"
              if pipe.latent is not None else "")
    return f"model: DDPM at step {pipe.step}, {about}, prediction {d.prediction}, T = {d.T}{latent}"


def resolve(cfg: SamplingConfig, given: set[str], pipe, job: str = "generate") -> SamplingConfig:
    """cfg checked against the checkpoint and the job ("generate", "inpaint", "init", "invert"),
    with every default that depends on them filled in, and `prompt` holding every prompt
    (--prompt and --prompts-file). Each refusal is one line (MinigenError)."""
    K, text = pipe.num_classes, pipe.kind == "ddpm" and pipe.tokenizer is not None
    editing = job != "generate"
    flag = lambda name: flag_of(type(cfg), name)                   # noqa: E731 - the flag a message names
    if pipe.kind == "gan":
        for name in DIFFUSION_ONLY:
            if name in given:
                raise MinigenError(f"{flag(name)} is for diffusion checkpoints; {cfg.ckpt} is a GAN")
    for name, parent in NEEDS.items():
        if name in given and getattr(cfg, parent) is None:
            raise MinigenError(f"{flag(name)} goes with {flag(parent)}")
    if cfg.color_target is not None and cfg.clip_guidance is not None:
        raise MinigenError("--color-target and --clip-guidance: one loss guidance at a time")
    sampler = cfg.sampler if "sampler" in given else "ddpm" if job == "inpaint" else "ddim"
    if "eta" in given and sampler != "ddim":
        own = {"ddpm": "has its own (see --variance)", "dpm++": "is deterministic", "cm": "noises x̂_0 afresh at every step"}
        raise MinigenError(f"--eta is DDIM's noise; the {sampler} sampler {own[sampler]}")
    if "variance" in given and sampler != "ddpm":
        raise MinigenError("--variance is the ddpm sampler's; DDIM's noise is --eta")
    for name in ("class_", "negative_class"):
        value = getattr(cfg, name)
        if value is not None and not value < K:
            raise MinigenError(f"{flag(name)} {value}: this model has " + (f"classes 0..{K - 1}" if K else "no classes"))

    # ---- prompts, for a text-conditional model ----------------------------------------------------
    prompts = list(cfg.prompt or [])
    if any(not p.strip() for p in prompts):
        raise MinigenError("--prompt: an empty prompt says nothing to draw (the model's unconditional pass is "
                           "--guidance 1)")
    if cfg.prompts_file:
        try:
            with open(cfg.prompts_file, "rb") as f:                    # a bounded read: /dev/zero ends here too
                raw = f.read(PROMPTS_FILE_LIMIT + 1)
            if len(raw) > PROMPTS_FILE_LIMIT:
                raise MinigenError(f"--prompts-file {cfg.prompts_file}: longer than {PROMPTS_FILE_LIMIT // 2**20} MiB; "
                                   "give one prompt a line")
            prompts += [line.strip() for line in raw.decode().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise MinigenError(f"--prompts-file {cfg.prompts_file}: cannot read it ({type(e).__name__})") from None
    if text:
        if cfg.class_ is not None or cfg.negative_class is not None:
            raise MinigenError(f"{cfg.ckpt} is text-conditional: say what to draw with --prompt TEXT, not a class")
        if not prompts and job != "invert":           # inversion needs none: it runs the unconditional model
            raise MinigenError(f"{cfg.ckpt} is text-conditional: say what to draw with --prompt TEXT "
                               "(or --prompts-file FILE)")
        pipe.prompts(prompts)                                         # unknown words: refused now, by field
        if cfg.negative_prompt:
            pipe.prompts([cfg.negative_prompt], what="the negative prompt")
        print(f"prompts: {len(prompts)}; vocabulary of {len(pipe.tokenizer)} words")
    elif prompts or cfg.negative_prompt:
        raise MinigenError(f"--prompt and --negative-prompt need a text-conditional model (train_ldm.py --condition "
                           f"text); {cfg.ckpt} is not")
    if "guidance" in given and not K and not text and pipe.kind == "ddpm":
        raise MinigenError("--guidance is classifier-free guidance, which needs a class-conditional model; "
                           f"{cfg.ckpt} is unconditional")
    if cfg.class_ is None and K and job in ("inpaint", "init"):
        raise MinigenError("this model is class-conditional: say which class to draw with --class K")
    if text and len(prompts) > 1 and editing:
        raise MinigenError("an edit follows one --prompt")

    # ---- the steps: the sampler's own number, a distilled student's, or inpainting's 100 --------------
    steps = cfg.steps
    if pipe.kind == "ddpm":
        T = pipe.diffusion.T
        # dpm++: Lu et al.'s 15-20 for guided sampling; a distilled student: the steps it learned (distill.py)
        own = {"ddim": pipe.distilled_steps or 50, "dpm++": 20, "ddpm": T, "cm": pipe.distilled_steps or 1}[sampler]
        steps = cfg.steps if cfg.steps is not None else (100 if job == "inpaint" else own)
        if not steps <= T:
            raise MinigenError(f"--steps {steps}: must be between 1 and T = {T}")
    return dataclasses.replace(cfg, sampler=sampler, steps=steps, prompt=prompts)


def generator_for(cfg: SamplingConfig, n: int, device):
    """Where the n images' noise comes from: one generator seeded --seed, or with --image-seeds
    one per image, image i's seeded seed + i (minigen/seeds.py)."""
    if cfg.image_seeds:
        if cfg.seed + n - 1 > SEED_MAX:
            raise MinigenError(f"--seed {cfg.seed} with --image-seeds: image {n} would need seed {cfg.seed + n - 1}, "
                               f"past {SEED_MAX}")
        return ImageSeeds(cfg.seed, n, device)
    return torch.Generator(device=device).manual_seed(cfg.seed)


def sampler_config(cfg: SamplingConfig, pipe) -> SamplerConfig:
    return SamplerConfig(cfg.sampler, cfg.steps, cfg.eta, cfg.spacing, cfg.variance, pipe.clip_x0 and not cfg.no_clip,
                         cfg.dynamic_threshold)


def conditioner(cfg: SamplingConfig, pipe):
    """labels -> the network's keyword arguments. A text-conditional model's "labels" index the
    prompts (cfg.prompt), so every path (rows, edits, walks) treats both alike; with no prompt
    (an inversion) they stand for the empty prompt, the unconditional model's."""
    if pipe.kind != "ddpm" or pipe.tokenizer is None:
        return pipe.condition
    return lambda labels: pipe.prompts([cfg.prompt[i] if cfg.prompt else "" for i in labels.tolist()])


def compiled(network, cfg: SamplingConfig, device):
    """The network as the sampler calls it. Sampling never changes the weights, so inductor may
    treat them as constants ("freezing"): it folds them into the graph and pre-packs convolution
    weights for oneDNN. Only the per-step network call is compiled; the loop stays Python. With
    --cuda-graphs the call is captured once as a CUDA graph and replayed: one launch per step
    instead of hundreds, which is what a small network at a small batch waits on."""
    if cfg.cuda_graphs and device.type != "cuda":
        raise MinigenError("--cuda-graphs: replays CUDA kernels; it needs a CUDA device")
    if cfg.cuda_graphs:
        return torch.compile(network, mode="reduce-overhead")
    return torch.compile(network, options={"freezing": True}) if cfg.compile else network


def make_denoiser(cfg: SamplingConfig, pipe, labels, net):
    """The network with every guidance asked for: classifier-free (with the negative class or
    prompt), loss (colour, CLIP) and classifier guidance, in that order (thresholding comes with
    the sampler)."""
    C, K, device = pipe.image_shape[0], pipe.num_classes, pipe.device
    # A latent model's x̂_0 is a latent: a loss on pixels is taken through the decoder (latent.pixel_loss);
    # a classifier of noisy pixels and a pixel-range threshold have no meaning on noisy latents.
    for name, value in (("--classifier", cfg.classifier), ("--dynamic-threshold", cfg.dynamic_threshold)):
        if value is not None and pipe.latent is not None:
            raise MinigenError(f"{name} acts on noisy pixels during sampling; {cfg.ckpt} samples latents "
                               "(latent diffusion)")
    in_pixels = (lambda loss: loss) if pipe.latent is None else pipe.latent.pixel_loss
    negative = None
    if cfg.negative_class is not None:
        negative = pipe.condition(torch.full((len(labels),), cfg.negative_class))
    if cfg.negative_prompt is not None:
        negative = pipe.prompts([cfg.negative_prompt] * len(labels))
    denoiser = pipe.denoiser(cfg.guidance, negative, network=net, sigma_interval=cfg.guidance_interval,
                             rescale=cfg.guidance_rescale)
    if cfg.color_target is not None:
        try:
            rgb = [float(v) for v in cfg.color_target.split(",")]
        except ValueError:
            raise MinigenError(f"--color-target {cfg.color_target}: give numbers in [0, 1], e.g. 1,0,0") from None
        if len(rgb) != C or not all(0 <= v <= 1 for v in rgb):
            raise MinigenError(f"--color-target {cfg.color_target}: give {C} value(s) in [0, 1] for this model")
        if cfg.color_scale:
            denoiser = LossGuidance(denoiser, in_pixels(colour_loss([2 * v - 1 for v in rgb])), cfg.color_scale)
    if cfg.clip_guidance is not None:
        if not cfg.clip:
            raise MinigenError("--clip-guidance needs --clip CKPT, a CLIP from train_clip.py")
        clip = pipelines.load(cfg.clip, device, kind="clip")
        if clip.image_shape != pipe.image_shape:
            raise MinigenError(f"--clip {cfg.clip}: sees {'x'.join(map(str, clip.image_shape))} images; this model makes "
                               f"{'x'.join(map(str, pipe.image_shape))}")
        if cfg.clip_scale:
            target = clip.encode_text([cfg.clip_guidance])[0]
            denoiser = LossGuidance(denoiser, in_pixels(clip_loss(clip.encode_image, target)), cfg.clip_scale)
    if cfg.classifier is not None:
        if not K:
            raise MinigenError("--classifier steers towards a class: this model has no classes")
        judge = pipelines.load(cfg.classifier, device, kind="vit").network
        if (judge.config.image_channels, *judge.config.image_size) != pipe.image_shape:
            raise MinigenError(f"--classifier {cfg.classifier}: judges {judge.config.image_channels}x"
                               f"{'x'.join(map(str, judge.config.image_size))} images; this model makes "
                               f"{'x'.join(map(str, pipe.image_shape))}")
        if judge.config.num_classes != K:
            raise MinigenError(f"--classifier {cfg.classifier}: knows {judge.config.num_classes} classes; "
                               f"this model has {K}")
        if not judge.config.time_conditioned:
            print(f"note: {cfg.classifier} was trained on clean images; classifier guidance needs one "
                  "trained with train_vit.py --noisy")
        if cfg.classifier_scale:
            denoiser = ClassifierGuidance(denoiser, judge, cfg.classifier_scale, labels.to(device))
    return denoiser
