"""Train a denoising diffusion model (DDPM, Ho et al. 2020) with a U-Net, written out step by step.

    python train_ddpm.py                                  # class-conditional digits (built-in glyphs), CPU
    python train_ddpm.py --dataset shapes --steps 3000    # the built-in RGB shapes
    python train_ddpm.py --dataset folder:~/cars --image-size 64 --preset cifar --amp --compile
    python train_ddpm.py --resume                         # continue runs/ddpm/last.pt to --steps
    python train_ddpm.py --dataset fashion --autoencoder runs/vae-fashion/last.pt --out runs/ldm-fashion
                                                          # latent diffusion on a train_vae.py autoencoder
    python train_ddpm.py --dataset captioned-shapes --condition text --out runs/t2i    # prompts, not classes
    torchrun --nproc_per_node 2 train_ddpm.py ...         # DistributedDataParallel, one process per device

Writes into --out (default runs/ddpm): last.pt (checkpoint), metrics.jsonl, forward.png (the
forward process on one image), samples/step_NNNNNN.png and strips/step_NNNNNN.png (guided
samples from fixed noise and the reverse process of one of them, at every --sample-every
steps), and at the end samples.png (a row per class) and reverse.png.

With --autoencoder the same U-Net learns to denoise the autoencoder's latents s·z instead of
pixels (latent diffusion, Rombach et al. 2022; minigen/diffusion/latent.py): s is measured on the
data at the start, and the autoencoder is embedded in the checkpoint, so sampling needs no
second file. Pictures show decoded images (and the strips decoded x̂_0).

With --condition text the model learns from captions instead of class labels: a text encoder
(trained with it, or a train_clip.py text tower with --text-encoder, frozen with --freeze-text)
turns each caption into tokens that the U-Net cross-attends to (models/text_to_image.py);
dropping captions (--cond-drop) teaches the unconditional model, the empty prompt.

Ctrl-C saves a checkpoint and stops; --resume continues bit for bit (on CPU).
"""

import dataclasses
import re
import sys
import time
from dataclasses import dataclass
from functools import partial

import torch

from minigen.cli import at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, load_dataset
from minigen.device import seed_everything
from minigen import pipelines
from minigen.diffusion import PREDICTIONS, Diffusion, DiffusionConfig, Frames, SamplerConfig
from minigen.diffusion.latent import LatentSpace
from minigen.diffusion.samplers import frame_caption
from minigen.diffusion.schedules import NAMES as SCHEDULES
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.images import save_grid, save_strip
from minigen.progress import progress_bar
from minigen.models import text as text_models
from minigen.models.text_to_image import TextToImage, TextToImageConfig
from minigen.models.unet import PRESETS, UNet, fit_grid, preset
from minigen.tokenizer import Tokenizer
from minigen.pipelines import DiffusionPipeline
from minigen.training.ema import EMA
from minigen.training.lifecycle import Run, RunConfig
from minigen.training.lr import warmup_cosine


@dataclass
class TrainConfig(DataConfig, RunConfig):
    preset: str = setting("cpu", "U-Net size", choices=PRESETS)
    autoencoder: str | None = setting(None, "latent diffusion: denoise the latents of this train_vae.py checkpoint "
                                            "(made on the same data and image size) instead of pixels")
    condition: str = setting("class", "what the model is told: class labels, or text (each image's caption, through "
                                      "cross-attention)", choices=("class", "text"))
    text_encoder: str | None = setting(None, "with --condition text: start the text encoder and tokenizer from this "
                                             "train_clip.py checkpoint's text tower")
    freeze_text: bool = setting(False, "with --text-encoder: keep the text encoder fixed (Stable Diffusion's recipe) "
                                       "instead of training it with the U-Net")
    dropout: float | None = setting(None, "dropout in the U-Net's ResBlocks (default: the preset's, 0.1; 0 trains "
                                          "about 1.1x faster on a CPU, README Performance)",
                                   check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    attention: str | None = setting(None, "comma-separated feature-map sizes whose U-Net levels get self-attention "
                                          "(and cross-attention to the text), e.g. 8,4 (default: the preset's, fitted "
                                          "to the grid)",
                                   check=lambda v: None if re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*", v) else
                                   "give feature-map sizes separated by commas, e.g. 8,4")
    steps: int = setting(1200, "total optimizer steps of the run (a resumed run stops at the same step)", runtime=True,
                         check=at_least(1))
    batch_size: int = setting(64, "images per step (per process under torchrun)", check=at_least(1))
    lr: float = setting(1e-3, "peak AdamW learning rate", check=positive)
    warmup: int = setting(100, "linear learning-rate warm-up steps, then cosine decay to 0", check=non_negative)
    weight_decay: float = setting(0.0, "AdamW weight decay", check=non_negative)
    grad_clip: float = setting(1.0, "clip the gradient's global norm to this (0: off)", check=non_negative)
    schedule: str = setting("linear", "β schedule", choices=SCHEDULES)
    T: int = setting(1000, "number of diffusion steps", check=at_least(1))
    # v, not ε: with ε-prediction x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t carries the network's error times
    # σ_t = √((1−ᾱ_t)/ᾱ_t), which is > 1 at mid and high noise; ε̂'s error is white, so x̂_0 gets
    # speckles there that DDIM then keeps. v̂ gives x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂: the error is
    # never amplified. Measured on the default glyph run: 20% grainy samples with eps, 0% with v
    # (README, "Clean samples").
    prediction: str = setting("v", "what the network predicts: v (velocity, Salimans & Ho 2022), eps (noise, "
                                   "Ho et al. 2020), x0 (clean image)", choices=PREDICTIONS)
    min_snr: float = setting(5.0, "min-SNR-γ loss weighting, Hang et al. 2023 (0: off)", check=non_negative)
    cond_drop: float = setting(0.1, "probability of replacing the label by 'null', so the model also learns "
                                    "the unconditional score for classifier-free guidance", check=between(0, 1))
    ema_decay: float = setting(0.999, "largest EMA decay (it warms up from 0); samples use the EMA weights",
                                check=between(0, 1))
    out: str = setting("runs/ddpm", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)
    compile: bool = setting(False, "torch.compile the model for training (the plain module is what gets saved)",
                            runtime=True)
    cuda_graphs: bool = setting(False, "with --compile on CUDA: replay the compiled forward and backward as CUDA "
                                       "graphs (mode reduce-overhead; README, Performance)", runtime=True)
    channels_last: bool = setting(True, "keep activations in NHWC memory layout (faster convolutions on CPU and GPU)",
                                  runtime=True)
    amp: bool = setting(False, "bf16 autocast (CUDA only)", runtime=True)
    sample_every: int = setting(500, "write a sample grid and reverse-diffusion strip every N steps (0: only at the end)",
                                runtime=True, check=non_negative)
    sample_steps: int = setting(50, "DDIM steps for the progress samples (at most --T)", runtime=True,
                               check=at_least(1))
    guidance: float = setting(3.0, "classifier-free guidance scale w for the progress samples (1: none)", runtime=True)


# ---- the step ---------------------------------------------------------------------------------

def train_step(model, net, diffusion: Diffusion, optimizer, ema: EMA, batch, cfg):
    """One step of Ho et al.'s Algorithm 1: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at a random t, the loss
    ‖target − f_θ(x_t, t)‖² (target ε in the paper; v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 by default here),
    a gradient step, the EMA update. `net` is `model` as it runs (compiled,
    DistributedDataParallel). No value is read on the host here: tests run it on the meta device."""
    x0, cond = batch                      # cond: the network's keyword arguments (labels, or a caption's tokens)
    # condition dropout: the model also learns p(x), for classifier-free guidance
    cond = model.drop_condition(cfg.cond_drop, **cond) if cond else {}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and x0.device.type == "cuda"):
        loss = diffusion.loss(net, x0, min_snr_gamma=cfg.min_snr or None, **cond)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    optimizer.step()
    ema.update(model)
    return loss.detach(), grad_norm


# ---- pictures ---------------------------------------------------------------------------------

def draw(pipe: DiffusionPipeline, x_T, cond: dict, cfg, progress: bool = False):
    """Guided DDIM samples from x_T, and the reverse process of the first one as a strip of
    x_T and ten frames, each captioned with the timestep its image is at. A latent model's
    strip shows the decoded x̂_0 of each step instead (a decoded noisy latent is no picture)."""
    sampler = SamplerConfig("ddim", steps=cfg.sample_steps, clip_x0=pipe.clip_x0)
    frames = Frames()
    x = sampler.sample(pipe.denoiser(cfg.guidance), x_T, cond=cond, callback=frames, progress=progress)
    strip, captions = frames.strip(10, of="x_t" if pipe.latent is None else "x0")
    t_T = sampler.timesteps(pipe.diffusion)[0]
    first = x_T[:1] if pipe.latent is None else pipe.to_pixels(torch.zeros_like(x_T[:1]))   # latent: D(0), the mean
    return pipe.to_pixels(x), torch.cat([first.cpu(), pipe.to_pixels(strip).cpu()]), [frame_caption(t_T)] + captions


@torch.no_grad()
def latent_moments(latent: LatentSpace, data, flip: bool, device, chunk: int = 500) -> torch.Tensor:
    """μ and log σ² of q(z|x) for every training image, and for its mirror image with --flip:
    (2 if flip else 1, N, 2c, h, w), kept in host memory. The autoencoder is frozen, so they never
    change: encoding each image once, not at every step it is drawn, leaves the training steps
    to the U-Net (1.4-1.5x the images per second on a CPU, README: Text to image)."""
    views = [False, True] if flip else [False]
    out = []
    for mirrored in views:
        parts = []
        for i in progress_bar(range(0, len(data), chunk), desc="latents" + (" (mirrored)" if mirrored else ""),
                              leave=False):
            x = data.batch(torch.arange(i, min(i + chunk, len(data))))[0].to(device)
            parts.append(torch.cat(latent.moments(x.flip(-1) if mirrored else x), dim=1).cpu())   # (b, 2c, h, w)
        out.append(torch.cat(parts))
    return torch.stack(out)


def attention_sizes(flag: str, config) -> tuple[int, ...]:
    """--attention "8,4" -> (8, 4), each the feature-map size (min of H, W) of one of the U-Net's levels."""
    levels = [min(config.image_size) // 2**i for i in range(len(config.channel_mults))]
    sizes = tuple(int(part) for part in flag.split(","))          # the flag's format is checked where it is declared
    if not set(sizes) <= set(levels):
        raise MinigenError(f"--attention {flag}: this U-Net's levels are {','.join(map(str, levels))} pixels wide")
    return sizes


def main(argv=None) -> int:
    run_ = Run.from_command_line(TrainConfig, "ddpm", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    if cfg.sample_steps > cfg.T:
        raise MinigenError(f"--sample-steps {cfg.sample_steps}: must be at most --T {cfg.T}")
    if cfg.cuda_graphs and (device.type != "cuda" or not cfg.compile):
        raise MinigenError("--cuda-graphs: replays compiled CUDA kernels; it needs --compile and a CUDA device")
    seed_everything(cfg.seed)

    # ---- data -----------------------------------------------------------------------------
    data = cfg.select(load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size,
                                   channels=cfg.channels, seed=cfg.seed, download_missing=cfg.download and run_.main))
    C, H, W = data.shape
    text = cfg.condition == "text"
    conditional = len(data.classes) > 1 and not text
    if text and cfg.flip:
        raise MinigenError("--flip with --condition text: captions name positions; a mirrored image contradicts its own")
    if (cfg.text_encoder or cfg.freeze_text) and not text:
        raise MinigenError("--text-encoder and --freeze-text go with --condition text")
    if cfg.freeze_text and not cfg.text_encoder:
        raise MinigenError("--freeze-text keeps a trained text encoder fixed: give one with --text-encoder CLIP_CKPT")
    say(f"data: {cfg.dataset}, {len(data)} images of {C}x{H}x{W}, "
        + ("captions (text-conditional)" if text else f"{len(data.classes)} classes (class-conditional)"
           if conditional else "unconditional"))

    # ---- latent diffusion: the frozen autoencoder and the scale of its latents ---------------
    latent = None
    if run_.state is not None and "latent" in run_.state["extra"]:        # resumed: the one it began with
        latent = LatentSpace.from_state(run_.state["extra"]["latent"], str(run_.ckpt_path)).to(device)
    elif cfg.autoencoder:
        vae = pipelines.load(cfg.autoencoder, device, kind="vae")
        if vae.image_shape != (C, H, W):
            raise MinigenError(f"--autoencoder {cfg.autoencoder}: encodes {'x'.join(map(str, vae.image_shape))} images; "
                               f"the data is {C}x{H}x{W} (train it with the same --dataset and --image-size)")
        x_fit = data.batch(torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:1024])[0]
        latent = LatentSpace.fit(vae.network, x_fit.to(device), torch.Generator(device).manual_seed(cfg.seed),
                                 source=str(cfg.autoencoder))
    if latent is not None:
        C, H, W = latent.autoencoder.config.latent_shape                 # the U-Net works on the latent grid
        say(f"latent diffusion: {latent.source} (f = {latent.factor}), latents {C}x{H}x{W}, scale s = {latent.scale:.4f}")

    # ---- model, diffusion, optimizer, EMA ---------------------------------------------------
    model_cfg = preset(cfg.preset, image_channels=C, num_classes=len(data.classes) if conditional else 0,
                       **({"dropout": cfg.dropout} if cfg.dropout is not None else {}))
    # pixels: the preset at the data's size; latents: its levels and attention fitted to the small grid
    model_cfg = fit_grid(model_cfg, (H, W)) if latent is not None else dataclasses.replace(model_cfg, image_size=(H, W))
    if cfg.attention:
        model_cfg = dataclasses.replace(model_cfg, attention_resolutions=attention_sizes(cfg.attention, model_cfg))
    tokenizer, clip = None, None
    if text:                            # the text encoder, its tokenizer, and cross-attention in the U-Net
        if run_.state is not None:
            tokenizer, text_cfg = Tokenizer(**run_.state["extra"]["tokenizer"]), run_.state["config"]["text"]
            text_cfg = text_models.TextEncoderConfig(**text_cfg)
        elif cfg.text_encoder:
            clip = pipelines.load(cfg.text_encoder, device, kind="clip")
            tokenizer, text_cfg = clip.tokenizer, clip.network.config.text
        else:
            tokenizer = Tokenizer.learn(data.every_caption())
            text_cfg = text_models.preset("tiny" if cfg.preset == "tiny" else "cpu", vocab_size=len(tokenizer),
                                          max_len=tokenizer.max_len)
        model_cfg = TextToImageConfig(dataclasses.replace(model_cfg, context_dim=text_cfg.dim), text_cfg, cfg.freeze_text)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = TextToImage(model_cfg) if text else UNet(model_cfg)
    if clip is not None:
        model.text.load_state_dict(clip.network.text.state_dict())      # CLIP's text tower
    model = model.to(device).to(memory_format=memory_format)
    diffusion_cfg = DiffusionConfig(cfg.schedule, cfg.T, cfg.prediction)
    diffusion = Diffusion.from_config(diffusion_cfg).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    y1 = torch.zeros(1, dtype=torch.long, device=device)
    one = [v.to(device) for v in tokenizer.encode(["a"])] if text else [y1 if conditional else None]
    flops = count_flops(model, torch.zeros(1, C, H, W, device=device), y1, *one)
    say(f"model: U-Net '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters"
        + (f" with a text encoder ({count_parameters(model.text) / 1e6:.2f}M, "
           f"{'from ' + cfg.text_encoder if cfg.text_encoder else 'trained with it'}"
           f"{', frozen' if cfg.freeze_text else ''}; {len(tokenizer)} words)" if text else "")
        + f", {flops / 1e9:.3f} GFLOP per {H}x{W} image forward")
    say(f"config: {dataclasses.asdict(cfg)}")
    say(f"model config: {dataclasses.asdict(model_cfg)}")

    g = torch.Generator().manual_seed(cfg.seed + 1)     # fixed noise and labels for progress pictures
    n_preview = 2 * len(data.classes) if conditional else 20
    fixed_labels = torch.arange(n_preview) % len(data.classes) if conditional else torch.zeros(n_preview, dtype=torch.long)
    fixed_noise = torch.randn(n_preview, C, H, W, generator=g)
    fixed_prompts = data.captions(torch.arange(n_preview // 2).repeat(2), 0) if text else []   # each prompt twice
    if run_.state is not None:
        fixed_noise, fixed_labels = run_.state["extra"]["fixed_noise"], run_.state["extra"]["fixed_labels"]
        fixed_prompts = run_.state["extra"].get("fixed_prompts", [])
    start = run_.attach(model, model_cfg, ema=ema, optimizer=optimizer, scheduler=scheduler,
                        extra={"diffusion": dataclasses.asdict(diffusion_cfg), "classes": list(data.classes),
                               "fixed_noise": fixed_noise, "fixed_labels": fixed_labels,
                               **({"latent": latent.state()} if latent is not None else {}),
                               **({"condition": "text", "tokenizer": tokenizer.state(), "fixed_prompts": fixed_prompts}
                                  if text else {})},
                        classes=list(data.classes) if conditional else [])
    fixed_noise, fixed_labels = fixed_noise.to(device), fixed_labels.to(device)
    pipe = DiffusionPipeline(ema.model, diffusion, list(data.classes), latent=latent,   # samples: the EMA weights
                             tokenizer=tokenizer if text else None)
    preview = pipe.prompts(fixed_prompts) if text else pipe.condition(fixed_labels)

    net = run_.wrap(model)
    net = torch.compile(net, mode="reduce-overhead" if cfg.cuda_graphs else "default") if cfg.compile else net
    if run_.main and start == 0:
        first = pipe.to_latent(data.batch(torch.tensor([0]))[0])[0].cpu()
        frames, ts = diffusion.forward_strip(first, frames=10, generator=g)
        say(f"wrote {save_strip(pipe.to_pixels(frames), run_.out / 'forward.png', captions=[frame_caption(t) for t in ts])} "
            "(the forward process on one training image" + (", each frame decoded)" if latent else ")"))

    # latent diffusion: q(z|x) of every training image, computed once (the autoencoder is frozen)
    moments = latent_moments(latent, data, cfg.flip, device) if latent is not None else None

    # ---- training loop: Ho et al. Algorithm 1 ------------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            index = batch_indices(step, len(data), cfg.batch_size, cfg.seed, run_.rank, run_.world)
            if latent is None:
                x0, y = data.batch(index, flip=cfg.flip)
            else:                                 # z_0 = s·z, z ~ q(z | x_0): a fresh draw every step
                view = (torch.rand(len(index)) < 0.5).long() if cfg.flip else torch.zeros(len(index), dtype=torch.long)
                mu, logvar = moments[view, index].to(device, non_blocking=True).chunk(2, dim=1)   # (B, c, h, w) each
                x0, y = latent.draw(mu, logvar), data.labels[index]
            if text:                              # each caption in a phrasing drawn anew (a pure function of the step)
                words = data.captions(index, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
                cond = dict(zip(("ids", "mask"), (v.to(device) for v in tokenizer.encode(words))))
            else:
                cond = {"y": y.to(device, non_blocking=True)} if conditional else {}
            x0 = x0.to(device, non_blocking=True)
            batch = x0.contiguous(memory_format=memory_format), cond
            if cfg.cuda_graphs:                   # a new iteration: the last step's graph outputs are done with
                torch.compiler.cudagraph_mark_step_begin()
            loss, grad_norm = train_step(model, net, diffusion, optimizer, ema, batch, cfg)
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)

            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0], grad_norm=grad_norm.item())
            if run_.main and run_.due(cfg.sample_every, last=False):
                x, strip, captions = draw(pipe, fixed_noise, preview, cfg)
                names = [data.classes[i][:8] for i in fixed_labels.tolist()] if conditional else None
                save_grid(x, run_.out / "samples" / f"step_{step + 1:06d}.png", nrow=10, captions=names)
                save_strip(strip, run_.out / "strips" / f"step_{step + 1:06d}.png", captions=captions)
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- final pictures -------------------------------------------------------------------
    if run_.main:
        rows = len(data.classes) if conditional else 4
        labels = torch.arange(rows).repeat_interleave(10).to(device) if conditional else None
        prompts = fixed_prompts[:rows] if text else []                     # a row per prompt
        cond = pipe.prompts([p for p in prompts for _ in range(10)]) if text else pipe.condition(labels)
        noise = torch.randn(rows * 10, C, H, W, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        began = time.perf_counter()
        x, strip, captions = draw(pipe, noise, cond, cfg, progress=True)
        seconds = time.perf_counter() - began
        row_labels = [p[:40] for p in prompts] if text else [c[:10] for c in data.classes] if conditional else None
        grid = save_grid(x, run_.out / "samples.png", nrow=10, row_labels=row_labels)
        strip = save_strip(strip, run_.out / "reverse.png", captions=captions)
        say(f"wrote {grid} (DDIM {cfg.sample_steps} steps, guidance {cfg.guidance}, {len(x) / seconds:.1f} images/s) "
            f"and {strip}")
        say(f"checkpoint: {run_.ckpt_path}; sample more with: python sample.py --ckpt {run_.ckpt_path}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
