"""Pipelines: everything needed to go from noise to pixels, loaded from one checkpoint file.

    pipe = pipelines.load("runs/ddpm/last.pt")           # any kind minigen writes
    x_T = pipe.noise(16, generator)                       # (16, C, H, W)
    denoiser = pipe.denoiser(guidance=3.0)                # network (EMA weights) + classifier-free guidance
    x = SamplerConfig("ddim", steps=50).sample(denoiser, x_T, cond=pipe.condition(labels))

A pipeline holds the network with its EMA weights, the settings it was trained with that
sampling needs (the diffusion process, stored as its own config), the samples' shape and the
class names. Scripts, the benchmark and a notebook all load models here; none rebuilds one.
Kinds: "ddpm" (DiffusionPipeline), "gan" (GANPipeline), "vae" (AutoencoderPipeline), "vit"
(ClassifierPipeline), "clip" (CLIPPipeline: both towers and the tokenizer). A latent diffusion model is a DiffusionPipeline with a `latent` space (the
frozen autoencoder and its scale, embedded in the checkpoint): the sampler works on latents,

    x = pipe.to_pixels(SamplerConfig(...).sample(pipe.denoiser(), pipe.noise(16)))   # (16, C, H, W)

and `to_pixels` / `to_latent` are the identity for a pixel model, so callers write one path.
A text-conditional model (train_ldm.py --condition text) also carries its tokenizer:
`pipe.prompts(texts)` gives the network's keyword arguments for prompts, as `pipe.condition(labels)`
does for classes.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from .diffusion import ClassifierFreeGuidance, Denoiser, Diffusion, DiffusionConfig, GuidanceInput, SamplerConfig
from .diffusion.guidance import sigma_interval_timesteps
from .diffusion.editing import REPAINT_JUMP, REPAINT_RESAMPLE, ddim_invert, repaint_projection, repaint_timesteps, sdedit_start
from .diffusion.latent import LatentSpace
from .errors import CheckpointError, MinigenError
from .seeds import normal
from .models.autoencoder import Autoencoder, AutoencoderConfig
from .models.clip import CLIP, CLIPConfig
from .models.dcgan import DCGANConfig, Discriminator, Generator
from .models.text_to_image import TextToImage, TextToImageConfig
from .models.unet import UNet, UNetConfig
from .models.vit import ViT, ViTConfig, read_groups
from .tokenizer import Tokenizer
from .training.checkpoint import load_checkpoint


class Pipeline:
    """What every pipeline says of the network that makes its samples (`maker`): their shape,
    the number of classes, the device."""

    @property
    def maker(self) -> nn.Module:
        return self.network

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.maker.config.image_channels, *self.maker.config.image_size)

    @property
    def num_classes(self) -> int:
        return self.maker.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.maker.parameters()).device


@dataclass
class DiffusionPipeline(Pipeline):
    network: UNet | TextToImage         # EMA weights, eval mode
    diffusion: Diffusion
    classes: list[str] = field(default_factory=list)
    step: int = 0                       # training steps behind these weights
    data: dict = field(default_factory=dict)         # the training run's data settings (dataset, size, ...)
    distilled_steps: int | None = None  # a distilled student: the DDIM steps it was trained to take (distill.py)
    latent: LatentSpace | None = None   # latent diffusion: the network denoises s·z, z = E(x) (diffusion/latent.py)
    tokenizer: Tokenizer | None = None  # a text-conditional model (models/text_to_image.py): its prompts' words
    kind = "ddpm"

    def prompts(self, texts: list[str], what: str = "the prompt") -> dict:
        """The network's keyword arguments for these prompts (a text-conditional model). A word
        the tokenizer never saw is refused in one line naming it and `what` it was in: the model
        knows nothing of it."""
        if self.tokenizer is None:
            raise MinigenError("this model is not text-conditional (train_ldm.py --condition text makes one)")
        ids, mask = self.tokenizer.encode_known(texts, what)
        return {"ids": ids.to(self.device), "mask": mask.to(self.device)}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The pixels it makes (C, H, W); the network's own space is `noise_shape`."""
        if self.latent is None:
            return self.noise_shape
        config = self.latent.autoencoder.config
        return (config.image_channels, *config.image_size)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """What the sampler works on: pixels, or the latent grid (c, H/f, W/f)."""
        return (self.network.config.image_channels, *self.network.config.image_size)

    @property
    def clip_x0(self) -> bool:
        """Whether x̂_0 may be clipped to [−1, 1]: pixels live there; scaled latents do not."""
        return self.latent is None

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's output as pixels: decoded for a latent model, as is otherwise."""
        return x if self.latent is None else self.latent.decode(x.to(self.device))

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels as the sampler's start or target (editing): μ(x)·s for a latent model."""
        return x if self.latent is None else self.latent.encode(x.to(self.device), sample=False)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x through the latent space and back, D(μ(x)): the best a latent model can draw x."""
        return self.to_pixels(self.to_latent(x))

    @property
    def guidance_distilled(self) -> bool:
        """Whether the network takes the guidance scale w as an input (distill.py --guidance-range)."""
        return getattr(getattr(self.network, "unet", self.network).config, "guidance_embedding", False)

    def condition(self, labels: torch.Tensor | None) -> dict:
        """The network's keyword arguments for these class labels ({} for an unconditional model)."""
        return {"y": labels.to(self.device)} if self.num_classes and labels is not None else {}

    def denoiser(self, guidance: float = 1.0, negative: dict | None = None, network=None,
                 sigma_interval: tuple[float, float] | None = None, rescale: float = 0.0) -> Denoiser:
        """The network (or a compiled `network` of the same weights) as a denoiser, with
        classifier-free guidance at scale w when the model is conditional and w ≠ 1 or a
        negative condition is given; only where the noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) lies in
        (σ_low, σ_high] when `sigma_interval` is given (Kynkäänniemi et al. 2024); rescaled by
        φ = `rescale` (Lin et al. 2024). A guidance-distilled student takes w as an input instead
        (one pass per step), and has no second pass to steer away from a negative condition."""
        network = self.network if network is None else network
        if self.guidance_distilled:
            if negative is not None:
                raise MinigenError("this student has guidance distilled in (w is an input: one network pass per step), "
                                   "so it has no unconditional pass for a negative prompt to replace; drop the "
                                   "negative prompt, or sample its teacher")
            if sigma_interval is not None or rescale:
                raise MinigenError("guidance intervals and rescaling act on two passes; this guidance-distilled "
                                   "student takes one, with w as an input")
            return Denoiser(self.diffusion, GuidanceInput(network, guidance))
        if (self.num_classes or self.tokenizer is not None) and (guidance != 1.0 or negative is not None):
            interval = None if sigma_interval is None else sigma_interval_timesteps(self.diffusion, *sigma_interval)
            network = ClassifierFreeGuidance(network, guidance, negative, interval, rescale)
        return Denoiser(self.diffusion, network)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I), (n, C, H, W), or z_T on the latent grid for a latent model."""
        return normal((n, *self.noise_shape), generator, self.device)

    # ---- drawing and editing: what sample.py and the studio both call ---------------------------
    # `image` is (1, C, H, W) in [−1, 1] on the pipeline's device; `sampler` a SamplerConfig;
    # `loop` goes to the sampling loop (cond, generator, callback, progress). Each returns pixels.

    def generate(self, sampler, denoiser, n: int, generator=None, **loop) -> torch.Tensor:
        """n samples from x_T ~ N(0, I): (n, C, H, W)."""
        return self.to_pixels(sampler.sample(denoiser, self.noise(n, generator), generator=generator, **loop))

    def inpaint(self, sampler, denoiser, image: torch.Tensor, keep: torch.Tensor, n: int, jump: int = REPAINT_JUMP,
                resample: int = REPAINT_RESAMPLE, generator=None, **loop) -> torch.Tensor:
        """RePaint (Lugmayr et al. 2022): regenerate where keep (1, 1, H, W) is 0, the known part
        put back at every step; a latent model's mask is min-pooled to the latent grid. (n, C, H, W)."""
        ts = repaint_timesteps(sampler.timesteps(self.diffusion), jump, resample)
        known = self.to_latent(image).expand(n, -1, -1, -1)
        keep_z = keep if self.latent is None else self.latent.mask(keep)     # (1, 1, h, w) on the latent grid
        result = self.to_pixels(sampler.sample(denoiser, self.noise(n, generator), ts, generator=generator,
                                               project=repaint_projection(self.diffusion, known, keep_z, generator),
                                               **loop))
        # Decoding does not give the known pixels back exactly (the autoencoder's reconstruction
        # error, and cells next to the hole): paste them back, as the user gave them.
        return image * keep + (1 - keep) * result

    def sdedit(self, sampler, denoiser, image: torch.Tensor, strength: float, n: int, generator=None,
               **loop) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): noise the image to t = strength·T, then run the reverse
        process from there. (n, C, H, W)."""
        if round(strength * self.diffusion.T) < 1:
            raise MinigenError(f"strength {strength}: less than one step of the chain; use at least "
                               f"{1 / self.diffusion.T:g}")
        x_t0, ts = sdedit_start(self.diffusion, self.to_latent(image).expand(n, -1, -1, -1), strength,
                                sampler.timesteps(self.diffusion), generator)
        return self.to_pixels(sampler.sample(denoiser, x_t0, ts, generator=generator, **loop))

    def invert(self, sampler, image: torch.Tensor, cond: dict, progress: bool = True,
               callback=None) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM inversion with the unconditional model (the image's class or prompt is not
        known): x_T (the sampler's space) and its deterministic DDIM reconstruction (pixels).
        `cond` is any condition of the model; its null condition is used. callback(t, x_t) after
        each step up, then callback(t, x_t, x̂_0) at each step of the reconstruction."""
        plain = self.denoiser()
        source = self.network.null_condition(**cond) if cond else {}
        x_T = ddim_invert(plain, self.to_latent(image), sampler.timesteps(self.diffusion), cond=source, refine=3,
                          progress=progress, callback=callback)
        back = self.to_pixels(SamplerConfig("ddim", sampler.steps, spacing=sampler.spacing, clip_x0=False)
                              .sample(plain, x_T, cond=source, progress=False, callback=callback))
        return x_T, back


@dataclass
class GANPipeline(Pipeline):
    generator: Generator                # EMA weights, eval mode
    discriminator: Discriminator
    classes: list[str] = field(default_factory=list)
    step: int = 0
    kind = "gan"

    @property
    def maker(self) -> nn.Module:
        return self.generator

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (n, z_dim)."""
        return normal((n, self.generator.config.z_dim), generator, self.device)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor | None, n: int, generator: torch.Generator | None = None,
               min_d_prob: float | None = None, network=None) -> tuple[torch.Tensor, int]:
        """n samples of G; with min_d_prob, each slot is redrawn until D's probability of "real"
        reaches it (at most 50 rounds of 32 candidates). Returns images and the number drawn."""
        G, D = self.generator if network is None else network, self.discriminator
        y = labels.to(self.device) if labels is not None and self.num_classes else None
        x = G(self.latent(n, generator), y)
        drawn = n
        if min_d_prob is None:
            return x, drawn
        keep = torch.sigmoid(D(x, y)) >= min_d_prob
        per_slot = 32                             # candidates drawn at once for each slot still empty
        for _ in range(50):
            missing = (~keep).nonzero().flatten()
            if len(missing) == 0:
                break
            y_try = y[missing].repeat(per_slot) if y is not None else None               # (per_slot·m,)
            candidates = G(self.latent(per_slot * len(missing), generator), y_try)
            score = torch.sigmoid(D(candidates, y_try)).reshape(per_slot, len(missing))
            best = score.argmax(0)                                                   # (m,) the best try per slot
            accepted = score[best, torch.arange(len(missing))] >= min_d_prob
            chosen = candidates.reshape(per_slot, len(missing), *x.shape[1:])[best, torch.arange(len(missing))]
            x[missing[accepted]] = chosen[accepted]
            keep[missing[accepted]] = True
            drawn += per_slot * len(missing)
        if not keep.all():
            raise MinigenError(f"--min-d-prob {min_d_prob}: only {int(keep.sum())} of {n} samples reached it after "
                               f"{drawn} draws; ask for a lower threshold")
        return x, drawn


@dataclass
class AutoencoderPipeline(Pipeline):
    network: Autoencoder                # EMA weights, eval mode
    classes: list[str] = field(default_factory=list)
    step: int = 0
    data: dict = field(default_factory=dict)
    kind = "vae"

    @property
    def num_classes(self) -> int:
        return 0                        # the VAE is unconditional

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The VAE as a generator: z ~ N(0, I) on the latent grid, decoded (n, C, H, W)."""
        z = torch.randn((n, *self.network.config.latent_shape), generator=generator, device=self.device)
        return self.network.decode(z).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(μ(x)), clipped to [−1, 1]: the image through the latent grid and back."""
        return self.network.decode(self.network.encode(x.to(self.device))[0]).clamp(-1, 1)


@dataclass
class ClassifierPipeline(Pipeline):
    network: ViT                        # eval mode
    classes: list[str] = field(default_factory=list)
    step: int = 0
    data: dict = field(default_factory=dict)         # the training run's data settings (dataset, size, ...)
    test_accuracy: float | None = None
    attributes: dict[str, list[str]] | None = None   # train_vit.py --attributes: one softmax per named attribute
    kind = "vit"

    @torch.no_grad()
    def read_attributes(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """An attribute classifier's reading (N, A) of images in [−1, 1]: the most probable value
        of each attribute's softmax."""
        if self.attributes is None:
            raise MinigenError("this ViT classifies classes, not attributes (train it with train_vit.py --attributes)")
        groups = [len(v) for v in self.attributes.values()]
        logits = torch.cat([self.network(x[i:i + batch].to(self.device)).cpu() for i in range(0, len(x), batch)])
        return read_groups(logits, groups)


@dataclass
class CLIPPipeline(Pipeline):
    network: CLIP                       # eval mode
    tokenizer: Tokenizer
    classes: list[str] = field(default_factory=list)
    step: int = 0
    data: dict = field(default_factory=dict)
    report: dict | None = None          # zero-shot accuracy and retrieval recall measured at the end of training
    kind = "clip"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.network.config.image.image_channels, *self.network.config.image.image_size)

    @property
    def num_classes(self) -> int:
        return 0

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Unit-length embeddings (B, E) of prompts; a word the tokenizer never saw is refused
        (MinigenError, one line naming the words), since the model knows nothing of it."""
        ids, mask = self.tokenizer.encode_known(prompts)
        return self.network.encode_text(ids.to(self.device), mask.to(self.device))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings (B, E) of images in [−1, 1] (differentiable, for guidance)."""
        return self.network.encode_image(x.to(self.device))


def _weights(state: dict) -> dict:
    """The EMA weights when the checkpoint has them: samples are drawn from the average."""
    return state["ema"]["model"] if "ema" in state else state["model"]


def _refuse_non_finite(path, state: dict) -> None:
    """Weights with a NaN or an infinity draw black grids: such a checkpoint is refused in one line."""
    parts = [state.get("model"), (state.get("ema") or {}).get("model"), *(state.get("others") or {}).values()]
    for weights in parts:
        if not isinstance(weights, dict):
            continue
        for name, value in weights.items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise CheckpointError(f"{path}: its weights hold NaN or infinite values ({name}): the run that saved "
                                      "them diverged; use an earlier checkpoint or train again")


def _ready(module: nn.Module, weights: dict, device) -> nn.Module:
    module.load_state_dict(weights)
    return module.to(device).eval()


def load(path, device="cpu", kind: str | tuple[str, ...] | None = None):
    """The pipeline of any checkpoint minigen writes, on `device`; `kind` (one or a tuple)
    refuses other kinds. A checkpoint that does not fit this minigen's models is a
    CheckpointError (one line)."""
    state = load_checkpoint(path)
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and state["kind"] not in wanted:
        raise CheckpointError(f"{path}: this is a {state['kind']!r} checkpoint, not a {' or '.join(map(repr, wanted))} one")
    _refuse_non_finite(path, state)
    classes, step = list(state["extra"].get("classes", [])), state["step"]
    train = state["extra"].get("train", {})
    data = state["extra"].get("data") or {k: train.get(k) for k in ("dataset", "image_size", "channels", "data_root")}
    try:
        if state["kind"] == "ddpm":
            text = state["extra"].get("condition") == "text"
            network = TextToImage(TextToImageConfig.from_dict(state["config"])) if text else UNet(UNetConfig(**state["config"]))
            network = _ready(network, _weights(state), device)
            tokenizer = Tokenizer(**state["extra"]["tokenizer"]) if text else None
            diffusion = Diffusion.from_config(DiffusionConfig(**state["extra"]["diffusion"])).to(device)
            latent = state["extra"].get("latent")
            latent = LatentSpace.from_state(latent, str(path)).to(device) if latent is not None else None
            return DiffusionPipeline(network, diffusion, classes, step, data, state["extra"].get("distilled_steps"),
                                     latent, tokenizer)
        if state["kind"] == "gan":
            config = DCGANConfig(**state["config"])
            G = _ready(Generator(config), _weights(state), device)
            D = _ready(Discriminator(config), state["others"]["discriminator"], device)
            return GANPipeline(G, D, classes, step)
        if state["kind"] == "vae":
            network = _ready(Autoencoder(AutoencoderConfig(**state["config"])), _weights(state), device)
            return AutoencoderPipeline(network, classes, step, data)
        if state["kind"] == "clip":
            network = _ready(CLIP(CLIPConfig.from_dict(state["config"])), state["model"], device)
            tokenizer = Tokenizer(**state["extra"]["tokenizer"])
            return CLIPPipeline(network, tokenizer, classes, step, data, state["extra"].get("zero_shot"))
        if state["kind"] == "vit":
            network = _ready(ViT(ViTConfig(**state["config"])), state["model"], device)
            return ClassifierPipeline(network, classes, step, data, state["extra"].get("test_accuracy"),
                                      state["extra"].get("attributes"))
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: does not match this minigen's {state['kind']} model "
                              f"({str(e).splitlines()[0][:150]})") from None
    raise CheckpointError(f"{path}: a {state['kind']!r} checkpoint, which minigen cannot load into a pipeline")
