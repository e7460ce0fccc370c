"""What the studio's buttons do: a request from the page, checked field by field, then run
through the same pipeline methods sample.py calls (generate, inpaint, sdedit, invert).

A request is a JSON object; every field is optional but `model` (the index of a served
checkpoint) and, for an edit, the image:

    mode       generate | inpaint | sdedit | invert
    label      class index (a class-conditional model)       prompt / negative   text (a text model)
    seed, n    how many images (1..16), image i drawn from seed + i alone (minigen/seeds.py)
    sampler    ddim | ddpm | dpm++ | cm      steps (1..T)    eta (0..1, DDIM)    guidance (w ≥ 0)
    image      a PNG/JPEG as a data URL, or test_index: an image of the model's own test split
    mask       a grayscale PNG data URL of the image's size, white = regenerate (inpaint)
    strength   SDEdit's t/T in (0, 1]

Anything wrong is a BadRequest: one line, the same words sample.py prints for the same mistake
(the image and mask readers are the same functions).

Every result says how it was made: its settings, and the sample.py or edit.py command that makes
the same pixels again (`command`), shown on the page and written into each PNG as a text chunk
(as sample.py does, and as AUTOMATIC1111 and ComfyUI do).
"""

import base64
import binascii
import io
import math
import shlex
import time
from dataclasses import dataclass

import torch
from PIL import PngImagePlugin

from ..cli import GUIDANCE, SEED, SEED_MAX, at_least, between
from ..data import to_float
from ..data.readers import read_image, read_mask
from ..diffusion import SAMPLERS, SamplerConfig
from ..diffusion.editing import REPAINT_JUMP, REPAINT_RESAMPLE, repaint_timesteps
from ..errors import MinigenError
from ..images import make_grid, mask_panel, to_pil
from ..seeds import ImageSeeds

MODES = ("generate", "inpaint", "sdedit", "invert")
MAX_IMAGES = 16


class BadRequest(MinigenError):
    """A request the studio cannot run: HTTP 400 with this one line."""


class Cancelled(Exception):
    """The page went away (its connection closed) while its job was waiting or running."""


def png_url(x: torch.Tensor, made_by: str | None = None, **grid) -> str:
    """Images (N, C, H, W) in [−1, 1] as one PNG data URL: a single image as is, several as a
    grid; `made_by` (the command that makes it) goes in as the text chunk "minigen", as sample.py
    writes it."""
    img = to_pil(x[0]) if len(x) == 1 and not grid else make_grid(x, **grid)
    info = PngImagePlugin.PngInfo()
    if made_by:
        info.add_itxt("minigen", made_by)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=info)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(value, what: str) -> bytes:
    """The bytes behind "data:image/...;base64,...."."""
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value:
        raise BadRequest(f"{what}: send it as a data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(value.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what}: its base64 does not decode") from None


def _field(body: dict, name: str, kind, default, check=None):
    """body[name] as `kind` (int, float, str), within `check`'s range; `default` when absent."""
    value = body.get(name)
    if value is None or value == "":
        return default
    try:
        if kind is int:                                      # 7, 7.0 or "7"; an int exactly, however large
            number = value if isinstance(value, int) and not isinstance(value, bool) else float(value)
            if isinstance(value, bool) or number != int(number):   # int(inf): OverflowError; int(nan): ValueError
                raise ValueError
            value = int(number)
        elif kind is float:
            value = float(value)
            if not math.isfinite(value):                     # "1e400", "inf", "nan" given as text
                raise ValueError
        else:
            value = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{name} {value!r}: must be {'an integer' if kind is int else 'a finite number' if kind is float else 'text'}") from None
    problem = check(value) if check else None
    if problem:
        raise BadRequest(f"{name} {value}: {problem}")
    return value


@dataclass
class Job:
    """A checked request, ready to run on its pipeline."""
    mode: str
    sampler: SamplerConfig
    guidance: float
    n: int
    seed: int
    cond: dict                        # the network's keyword arguments for the n images
    negative: dict | None
    label_name: str | None            # what the condition asks for, for captions
    label: int | None = None                  # the request's class, prompt and negative prompt, as given
    prompt: str | None = None
    negative_prompt: str | None = None
    image: torch.Tensor | None = None         # (1, C, H, W) in [−1, 1]
    keep: torch.Tensor | None = None          # (1, 1, H, W), 1 = keep
    strength: float = 0.6

    def settings(self) -> dict:
        """What made the result, as the page shows it beside the images."""
        s = self.sampler
        told = {"class": self.label_name} if self.label is not None else {"prompt": self.prompt} if self.prompt else {}
        return {"mode": self.mode, **told, **({"negative": self.negative_prompt} if self.negative_prompt else {}),
                "sampler": s.sampler, "steps": s.steps, **({"eta": s.eta} if s.eta else {}),
                **({"guidance": self.guidance} if self.cond else {}), "seed": self.seed, "n": self.n,
                **({"strength": self.strength} if self.mode == "sdedit" else {})}

    def command(self, ckpt: str, out: str, seed: int | None = None, n: int | None = None, files: str = "") -> str:
        """The sample.py (generate) or edit.py (edits) command that makes this job's pixels again:
        all n images, or with (seed, n = 1) image seed − self.seed alone. An edit reads the image
        and mask the page offers as FILES-original.png and FILES-mask.png."""
        seed, n = (self.seed, self.n) if seed is None else (seed, n)
        s = self.sampler
        args = ["sample.py" if self.mode == "generate" else "edit.py", "--ckpt", ckpt]
        args += {"inpaint": ["--inpaint", f"{files}-original.png", "--mask", f"{files}-mask.png"],
                 "sdedit": ["--init", f"{files}-original.png", "--strength", repr(self.strength)],
                 "invert": ["--invert", f"{files}-original.png"]}.get(self.mode, [])
        if self.label is not None:
            args += ["--class", str(self.label)]
        if self.prompt:
            args += ["--prompt", self.prompt]
        if self.negative_prompt:
            args += ["--negative-prompt", self.negative_prompt]
        args += ["--sampler", s.sampler, "--steps", str(s.steps)] + (["--eta", repr(s.eta)] if s.eta else [])
        if self.cond:                                       # a conditional model: classifier-free guidance's w
            args += ["--guidance", repr(self.guidance)]     # repr: every digit, so the same pixels
        args += ["--seed", str(seed), "-n", str(n)] + (["--image-seeds"] if n > 1 else []) + ["--out", out]
        return "python " + shlex.join(args)


def read_job(body: dict, pipe, test_png) -> Job:
    """Check every field of a request against this pipeline; `test_png(k)` gives test image k
    as PNG bytes. Raises BadRequest."""
    (C, H, W), d = pipe.image_shape, pipe.diffusion
    mode = _field(body, "mode", str, "generate")
    if mode not in MODES:
        raise BadRequest(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    name = _field(body, "sampler", str, "ddpm" if mode == "inpaint" else "ddim")
    if name not in SAMPLERS:
        raise BadRequest(f"sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    default_steps = {"ddim": pipe.distilled_steps or 50, "dpm++": 20, "ddpm": 100, "cm": pipe.distilled_steps or 1}[name]
    steps = _field(body, "steps", int, default_steps, between(1, d.T))
    eta = _field(body, "eta", float, 0.0, between(0, 1))
    if eta and name != "ddim":
        raise BadRequest(f"eta {eta}: η is DDIM's noise; the {name} sampler has its own")
    sampler = SamplerConfig(name, steps, eta, "trailing", "small", pipe.clip_x0)
    n = _field(body, "n", int, 1 if mode == "invert" else 4, between(1, MAX_IMAGES))
    if mode == "invert":
        n = 1
    seed = _field(body, "seed", int, 0, SEED)
    if seed + n - 1 > SEED_MAX:                      # image i's seed is seed + i: each one a seed sample.py takes
        raise BadRequest(f"seed {seed}: with {n} images the seeds run to {seed + n - 1}, past {SEED_MAX}")
    guidance = _field(body, "guidance", float, 3.0, GUIDANCE)

    # ---- what to draw: a class, a prompt, or nothing (an unconditional model) ----
    text = pipe.tokenizer is not None
    label, prompt = _field(body, "label", int, None), _field(body, "prompt", str, None)
    negative_text = _field(body, "negative", str, None)
    prompt = (prompt or "").strip() or None                                  # blank is no prompt at all
    negative_text = (negative_text or "").strip() or None
    if text:
        if prompt is None and mode != "invert":
            raise BadRequest("this model is text-conditional: write a prompt")
        cond = pipe.prompts([prompt or ""] * n)                      # unknown words: a MinigenError naming them
        negative = pipe.prompts([negative_text] * n, what="the negative prompt") if negative_text else None
        label_name = prompt
    elif pipe.num_classes:
        if label is None:
            raise BadRequest(f"this model is class-conditional: choose a class 0..{pipe.num_classes - 1}")
        if not 0 <= label < pipe.num_classes:
            raise BadRequest(f"label {label}: this model has classes 0..{pipe.num_classes - 1}")
        cond = pipe.condition(torch.full((n,), label))
        negative, label_name = None, pipe.classes[label] if pipe.classes else str(label)
    else:
        if prompt or label is not None:
            raise BadRequest("this model is unconditional: it takes no class and no prompt")
        cond, negative, label_name = {}, None, None
    job = Job(mode, sampler, guidance, n, seed, cond, negative, label_name, label if pipe.num_classes and not text
              else None, prompt if text else None, negative_text if text else None)
    if mode == "generate":
        return job

    # ---- the image to edit, and its mask ----
    if body.get("test_index") is not None:
        source, image_name = test_png(_field(body, "test_index", int, 0, at_least(0))), "the test image"
    else:
        source, image_name = decode_data_url(body.get("image"), "image"), "the uploaded image"
    job.image = to_float(torch.from_numpy(read_image(io.BytesIO(source), C, (H, W), name=image_name)))[None]
    if mode == "inpaint":
        mask = decode_data_url(body.get("mask"), "mask")
        keep = read_mask(io.BytesIO(mask), io.BytesIO(source), (H, W), name="the mask", image_name=image_name)
        job.keep = torch.from_numpy(keep)[None, None]
    job.strength = _field(body, "strength", float, 0.6, between(0, 1, low_open=True))
    return job


def plan(job: Job, pipe) -> dict:
    """How many network calls the job makes, and why that is not `steps` when it is not."""
    d, sampler = pipe.diffusion, job.sampler
    steps = len(sampler.timesteps(d))
    if job.mode == "inpaint":
        visited = repaint_timesteps(sampler.timesteps(d), REPAINT_JUMP, REPAINT_RESAMPLE) + [-1]
        total = sum(t_next < t for t, t_next in zip(visited, visited[1:]))     # the steps down: network calls
        return {"of": total, "note": f"inpainting: {steps} steps become {total} with RePaint's jumps back up "
                                     f"(jump {REPAINT_JUMP}, resample {REPAINT_RESAMPLE})"}
    if job.mode == "sdedit":
        total = round(job.strength * steps)
        return {"of": total, "note": f"SDEdit at strength {job.strength:g}: the last {total} of {steps} steps"}
    if job.mode == "invert":                         # up the chain, down again to reconstruct, and re-sample
        told = job.label_name is not None
        return {"of": steps * (3 if told else 2), "note": f"{steps} steps up the chain, {steps} down to reconstruct"
                                                         + (f", {steps} down again as {job.label_name}" if told else "")}
    return {"of": steps, "note": ""}


def run_job(job: Job, pipe, emit, ckpt: str = "CKPT", frame_every_s: float = 0.15) -> dict:
    """Run a job on its pipeline, calling emit(event) with its plan, then frames of the reverse
    process as it goes (x_t for a pixel model, and the x̂_0 predicted at that step, decoded for a
    latent one), at most one every `frame_every_s` seconds. emit raising Cancelled stops the loop
    there. Returns the final event: the result images as data URLs, each with its seed, file
    name and the command (naming `ckpt`) that makes it again."""
    device, start, sampler = pipe.device, time.perf_counter(), job.sampler
    generator = ImageSeeds(job.seed, job.n, device)            # image i from seed + i alone
    steps = plan(job, pipe)
    total = steps["of"]
    emit({"event": "plan", **steps})
    shown = {"i": 0, "last": 0.0}

    def frame(t: int, x_t: torch.Tensor, x0: torch.Tensor | None = None) -> None:
        """A frame of the reverse process (or, without x̂_0, of the inversion's climb)."""
        shown["i"] += 1
        now = time.perf_counter()
        if now - shown["last"] < frame_every_s and t >= 0:
            return
        shown["last"] = now
        event = {"event": "frame", "i": shown["i"], "of": max(total, shown["i"]), "t": int(t)}
        if x0 is not None:
            event["x0"] = png_url(pipe.to_pixels(x0).clamp(-1, 1), nrow=job.n, pad=1, scale=1)
        else:
            event["stage"] = "inverting"
        if pipe.latent is None:                      # a noisy latent is no picture
            event["x_t"] = png_url(x_t.clamp(-1, 1), nrow=x_t.shape[0], pad=1, scale=1)
        emit(event)

    loop = {"cond": job.cond, "generator": generator, "callback": frame, "progress": False}
    denoiser = pipe.denoiser(job.guidance, job.negative)
    with torch.no_grad():
        image = job.image.to(device) if job.image is not None else None
        if job.mode == "generate":
            x = pipe.generate(sampler, denoiser, job.n, **loop)
            panels, captions = x, None
        elif job.mode == "inpaint":
            keep = job.keep.to(device)
            x = pipe.inpaint(sampler, denoiser, image, keep, job.n, **loop)
            panels = torch.cat([image, mask_panel(keep, image), x])   # original | mask | results
            captions = ["original", "mask"] + [f"result {i + 1}" for i in range(job.n)]
        elif job.mode == "sdedit":
            x = pipe.sdedit(sampler, denoiser, image, job.strength, job.n, **loop)
            panels, captions = torch.cat([image, x]), ["original"] + [f"s = {job.strength:g}"] * job.n
        else:
            x_T, back = pipe.invert(sampler, image, job.cond, progress=False, callback=frame)
            told = bool(job.cond) and job.label_name is not None         # re-sampled as something: its name
            x = pipe.to_pixels(sampler.sample(denoiser, x_T, **loop)) if told else back
            panels = torch.cat([image, back, x]) if told else torch.cat([image, back])
            captions = ["original", "reconstructed"] + ([f"as {job.label_name}"[:24]] if told else [])
    seconds = time.perf_counter() - start

    # ---- the result: the grid and each image, each PNG carrying the command that makes it again ----
    stem = f"minigen-{job.mode}-{job.seed}"
    files = {"original": f"{stem}-original.png", "mask": f"{stem}-mask.png", "reconstructed": f"{stem}-reconstructed.png"}
    made_by = job.command(ckpt, f"{stem}.png", files=stem)
    images = []
    for i, (p, c) in enumerate(zip(panels.cpu(), captions or [None] * len(panels))):
        k = i - (len(panels) - job.n)                              # the result images are the last n panels
        single = job.command(ckpt, f"{stem}-{k + 1}.png", job.seed + k, 1, files=stem) if k >= 0 and job.mode != "invert" else None
        images.append({"caption": c or f"seed {job.seed + k}", "seed": job.seed + k if k >= 0 else None,
                       "name": files.get(c) or f"{stem}-{k + 1}.png", "command": single,
                       "image": png_url(p[None], made_by=single or made_by)})
    nrow = len(panels) if captions else None
    return {"event": "done", "seconds": round(seconds, 3), "images_per_s": round(job.n / seconds, 2),
            "grid": png_url(panels.cpu(), made_by=made_by, nrow=nrow, captions=captions), "name": f"{stem}.png",
            "command": made_by, "settings": job.settings(), "panels": images}
