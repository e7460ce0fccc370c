"""Train a latent diffusion model (Rombach et al. 2022): a small Stable Diffusion, written out step by step.

    python train_vae.py --dataset captioned-shapes --preset f2 --steps 1000 --out runs/vae-cshapes-f2
    python train_ldm.py --dataset captioned-shapes --condition text --autoencoder runs/vae-cshapes-f2/last.pt \
                        --attention 8,4 --dropout 0 --steps 5200 --out runs/t2i       # text to image
    python train_ldm.py ... --text-encoder runs/clip/last.pt --freeze-text             # CLIP's text tower, frozen
    python train_ldm.py --dataset fashion --autoencoder runs/vae-fashion/last.pt --out runs/ldm-fashion   # classes
    python train_ldm.py --resume --out runs/t2i                                        # continue a stopped run

The same U-Net as train_ddpm.py learns to denoise the latents s·z of a frozen train_vae.py
autoencoder instead of pixels (minigen/diffusion/latent.py): s is measured on the data at the
start, q(z|x) of every training image is computed once (the autoencoder never changes), each
step draws a fresh z from it, and the autoencoder is embedded in the checkpoint, so sampling
needs no second file. Pictures show decoded images (and the strips decoded x̂_0).

With --condition text the model learns from captions: a text encoder (trained with it, or a
train_clip.py text tower with --text-encoder, frozen with --freeze-text) turns each caption into
tokens that the U-Net cross-attends to (models/text_to_image.py); dropping captions (--cond-drop)
teaches the unconditional model, the empty prompt. With --condition class it learns from the
data set's class labels, as train_ddpm.py does.

Writes into --out (default runs/ldm) what train_ddpm.py writes. Ctrl-C saves a checkpoint and
stops; --resume continues bit for bit (on CPU).
"""

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial

import torch

from minigen import pipelines
from minigen.cli import run, setting
from minigen.data import batch_indices, load_dataset
from minigen.device import seed_everything
from minigen.diffusion import Diffusion, DiffusionConfig
from minigen.diffusion.latent import LatentSpace
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_flops, count_parameters
from minigen.models import text as text_models
from minigen.models.text_to_image import TextToImage, TextToImageConfig
from minigen.models.unet import UNet, fit_grid, preset
from minigen.pipelines import DiffusionPipeline
from minigen.tokenizer import Tokenizer
from minigen.training.diffusion_run import (DiffusionTrainConfig, attention_sizes, captions, check_settings,
                                            final_pictures, forward_picture, latent_moments, preview_pictures)
from minigen.training.ema import EMA
from minigen.training.lifecycle import Run
from minigen.training.lr import warmup_cosine


@dataclass
class TrainConfig(DiffusionTrainConfig):
    autoencoder: str = setting(None, "the train_vae.py checkpoint whose latents the U-Net denoises (made on the same "
                                     "data and image size); required")
    condition: str = setting("class", "what the model is told: class labels, or text (each image's caption, through "
                                      "cross-attention)", choices=("class", "text"))
    text_encoder: str | None = setting(None, "with --condition text: start the text encoder and tokenizer from this "
                                             "train_clip.py checkpoint's text tower")
    freeze_text: bool = setting(False, "with --text-encoder: keep the text encoder fixed (Stable Diffusion's recipe) "
                                       "instead of training it with the U-Net")
    out: str = setting("runs/ldm", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)


# ---- what the U-Net is told (the latents and captions: training/diffusion_run.py) -----------------

def text_encoder(cfg, state, data, device):
    """The tokenizer and the text encoder's config: the resumed run's, CLIP's text tower's, or
    new ones learned from every caption of the data; and the CLIP pipeline, if one is used."""
    if state is not None:
        return Tokenizer(**state["extra"]["tokenizer"]), text_models.TextEncoderConfig(**state["config"]["text"]), None
    if cfg.text_encoder:
        clip = pipelines.load(cfg.text_encoder, device, kind="clip")
        return clip.tokenizer, clip.network.config.text, clip
    tokenizer = Tokenizer.learn(data.every_caption())
    return tokenizer, text_models.preset("tiny" if cfg.preset == "tiny" else "cpu", vocab_size=len(tokenizer),
                                         max_len=tokenizer.max_len), None


# ---- the step ---------------------------------------------------------------------------------

def train_step(model, net, diffusion: Diffusion, optimizer, ema: EMA, batch, cfg):
    """Rombach et al.'s step: Ho et al.'s Algorithm 1 on the scaled latent z_0 = s·z of the image:
    z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε, the loss ‖target − f_θ(z_t, t, cond)‖², a gradient step, the EMA
    update. cond is the caption's tokens (or the class label), dropped to the empty prompt (the
    null label) with probability --cond-drop. No value is read on the host here."""
    z0, cond = batch
    cond = model.drop_condition(cfg.cond_drop, **cond) if cond else {}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and z0.device.type == "cuda"):
        loss = diffusion.loss(net, z0, min_snr_gamma=cfg.min_snr or None, **cond)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    optimizer.step()
    ema.update(model)
    return loss.detach(), grad_norm


def check_ldm_settings(cfg, state, ckpt_path) -> None:
    """What train_ldm.py's flags must agree on, refused in one line before any work."""
    text = cfg.condition == "text"
    if state is not None and "latent" not in state["extra"]:
        raise MinigenError(f"{ckpt_path} is a pixel diffusion run: continue it with "
                           f"python train_ddpm.py --resume --out {cfg.out}")
    if not cfg.autoencoder and state is None:
        raise MinigenError("--autoencoder VAE_CKPT: latent diffusion needs a train_vae.py checkpoint (pixel "
                           "diffusion is train_ddpm.py)")
    if text and cfg.flip:
        raise MinigenError("--flip with --condition text: captions name positions; a mirrored image contradicts its own")
    if (cfg.text_encoder or cfg.freeze_text) and not text:
        raise MinigenError("--text-encoder and --freeze-text go with --condition text")
    if cfg.freeze_text and not cfg.text_encoder:
        raise MinigenError("--freeze-text keeps a trained text encoder fixed: give one with --text-encoder CLIP_CKPT")


def main(argv=None) -> int:
    run_ = Run.from_command_line(TrainConfig, "ddpm", argv, description=__doc__)
    cfg, device, say, state = run_.cfg, run_.device, run_.say, run_.state
    text = cfg.condition == "text"
    check_ldm_settings(cfg, state, run_.ckpt_path)
    check_settings(cfg, device)
    seed_everything(cfg.seed)

    # ---- data, and the frozen autoencoder with the scale of its latents ------------------------
    data = cfg.select(load_dataset(cfg.dataset, "train", root=cfg.data_root, size=cfg.image_size,
                                   channels=cfg.channels, seed=cfg.seed, download_missing=cfg.download and run_.main))
    K = len(data.classes) if len(data.classes) > 1 and not text else 0      # classes the model is told
    say(f"data: {cfg.dataset}, {len(data)} images of {'x'.join(map(str, data.shape))}, " + (
        "captions (text-conditional)" if text else f"{K} classes (class-conditional)" if K else "unconditional"))
    if state is not None:                                                   # resumed: the one it began with
        latent = LatentSpace.from_state(state["extra"]["latent"], str(run_.ckpt_path)).to(device)
    else:
        vae = pipelines.load(cfg.autoencoder, device, kind="vae")
        if vae.image_shape != data.shape:
            raise MinigenError(f"--autoencoder {cfg.autoencoder}: encodes {'x'.join(map(str, vae.image_shape))} images; "
                               f"the data is {'x'.join(map(str, data.shape))} (train it with the same --dataset and "
                               "--image-size)")
        x_fit = data.batch(torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:1024])[0]
        latent = LatentSpace.fit(vae.network, x_fit.to(device), torch.Generator(device).manual_seed(cfg.seed),
                                 source=str(cfg.autoencoder))
    C, H, W = latent.autoencoder.config.latent_shape                        # the U-Net works on the latent grid
    say(f"latent diffusion: {latent.source} (f = {latent.factor}), latents {C}x{H}x{W}, scale s = {latent.scale:.4f}")

    # ---- model: the U-Net fitted to the latent grid (with a text encoder), diffusion, optimizer, EMA --
    model_cfg = fit_grid(preset(cfg.preset, image_channels=C, num_classes=K,
                                **({"dropout": cfg.dropout} if cfg.dropout is not None else {})), (H, W))
    if cfg.attention:
        model_cfg = dataclasses.replace(model_cfg, attention_resolutions=attention_sizes(cfg.attention, model_cfg))
    if text:                            # the text encoder, its tokenizer, and cross-attention in the U-Net
        tokenizer, text_cfg, clip = text_encoder(cfg, state, data, device)
        model_cfg = TextToImageConfig(dataclasses.replace(model_cfg, context_dim=text_cfg.dim), text_cfg, cfg.freeze_text)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = TextToImage(model_cfg) if text else UNet(model_cfg)
    if text and clip is not None:
        model.text.load_state_dict(clip.network.text.state_dict())      # CLIP's text tower
    model = model.to(device).to(memory_format=memory_format)
    diffusion_cfg = DiffusionConfig(cfg.schedule, cfg.T, cfg.prediction)
    diffusion = Diffusion.from_config(diffusion_cfg).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    y1 = torch.zeros(1, dtype=torch.long, device=device)
    told = [v.to(device) for v in tokenizer.encode(["a"])] if text else [y1 if K else None]
    flops = count_flops(model, torch.zeros(1, C, H, W, device=device), y1, *told)
    say(f"model: U-Net '{cfg.preset}', {count_parameters(model) / 1e6:.2f}M parameters"
        + (f" with a text encoder ({count_parameters(model.text) / 1e6:.2f}M, "
           f"{'from ' + cfg.text_encoder if cfg.text_encoder else 'trained with it'}"
           f"{', frozen' if cfg.freeze_text else ''}; {len(tokenizer)} words)" if text else "")
        + f", {flops / 1e9:.3f} GFLOP per {H}x{W} latent forward")
    say(f"config: {dataclasses.asdict(cfg)}")
    say(f"model config: {dataclasses.asdict(model_cfg)}")

    # fixed noise, labels and prompts for the progress pictures (each prompt twice)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_preview = 2 * K if K else 20
    fixed_labels = torch.arange(n_preview) % K if K else torch.zeros(n_preview, dtype=torch.long)
    fixed_noise = torch.randn(n_preview, C, H, W, generator=g)
    fixed_prompts = data.captions(torch.arange(n_preview // 2).repeat(2), 0) if text else []
    if state is not None:
        fixed_noise, fixed_labels = state["extra"]["fixed_noise"], state["extra"]["fixed_labels"]
        fixed_prompts = state["extra"].get("fixed_prompts", [])
    start = run_.attach(model, model_cfg, ema=ema, optimizer=optimizer, scheduler=scheduler,
                        extra={"diffusion": dataclasses.asdict(diffusion_cfg), "classes": list(data.classes),
                               "fixed_noise": fixed_noise, "fixed_labels": fixed_labels, "latent": latent.state(),
                               **({"condition": "text", "tokenizer": tokenizer.state(), "fixed_prompts": fixed_prompts}
                                  if text else {})},
                        classes=list(data.classes) if K else [])
    pipe = DiffusionPipeline(ema.model, diffusion, list(data.classes), latent=latent,   # samples: the EMA weights
                             tokenizer=tokenizer if text else None)
    preview = pipe.prompts(fixed_prompts) if text else pipe.condition(fixed_labels)
    names = [data.classes[i][:8] for i in fixed_labels.tolist()] if K else None
    # what the model is told for a batch: condition(index, step) -> the network's keyword arguments
    condition = captions(data, tokenizer, cfg.seed, device) if text else lambda index, step: pipe.condition(data.labels[index])
    net = run_.wrap(model)
    net = torch.compile(net, mode="reduce-overhead" if cfg.cuda_graphs else "default") if cfg.compile else net
    if run_.main and start == 0:
        forward_picture(run_, pipe, pipe.to_latent(data.batch(torch.tensor([0]))[0])[0].cpu(), g)
    moments = latent_moments(latent, data, cfg.flip, device)      # q(z|x) of every training image, once

    # ---- training loop: Ho et al. Algorithm 1 on latents -------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            index = batch_indices(step, len(data), cfg.batch_size, cfg.seed, run_.rank, run_.world)
            view = (torch.rand(len(index)) < 0.5).long() if cfg.flip else torch.zeros(len(index), dtype=torch.long)
            mu, logvar = moments[view, index].to(device, non_blocking=True).chunk(2, dim=1)   # (B, c, h, w) each
            z0 = latent.draw(mu, logvar).contiguous(memory_format=memory_format)   # z_0 = s·z, z ~ q(z | x): fresh
            if cfg.cuda_graphs:                   # a new iteration: the last step's graph outputs are done with
                torch.compiler.cudagraph_mark_step_begin()
            loss, grad_norm = train_step(model, net, diffusion, optimizer, ema, (z0, condition(index, step)), cfg)
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)

            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0], grad_norm=grad_norm.item())
            if run_.main and run_.due(cfg.sample_every, last=False):
                preview_pictures(run_, pipe, fixed_noise.to(device), preview, cfg, step + 1, captions=names)
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- final pictures: a row per class, or per prompt --------------------------------------------
    if run_.main:
        rows = K or 4
        prompts = fixed_prompts[:rows]
        cond = pipe.prompts([p for p in prompts for _ in range(10)]) if text else pipe.condition(
            torch.arange(rows).repeat_interleave(10) if K else None)
        noise = torch.randn(rows * 10, C, H, W, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        final_pictures(run_, pipe, noise, cond, cfg,
                       row_labels=[p[:40] for p in prompts] if text else [c[:10] for c in data.classes] if K else None)
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
