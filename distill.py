"""Distil a trained diffusion model into a few-step student (progressive distillation,
Salimans & Ho 2022), written out step by step.

    python distill.py --teacher runs/ddpm/last.pt                          # 32 -> 16 -> ... -> 1 DDIM steps
    python distill.py --teacher runs/fashion-v/last.pt --start-steps 16 --final-steps 2 --out runs/students
    python sample.py --ckpt runs/distill/last.pt                           # samples in the student's steps
    python distill.py --teacher runs/ddpm/last.pt --method consistency --out runs/cd   # one step
    python sample.py --ckpt runs/cd/steps_1.pt --sampler cm --steps 4      # a consistency student, 4 steps
    python distill.py --teacher runs/t2i/last.pt --guidance-range 1,6 --out runs/turbo   # text, w distilled in
    python sample.py --ckpt runs/turbo/steps_1.pt --prompt "a large red circle in the centre on white"
    python distill.py --teacher runs/ddpm/last.pt --resume                 # continue after Ctrl-C

Each round halves the steps: a student, starting from its teacher's weights, learns to take in
one DDIM step what the teacher takes in two (minigen/diffusion/distillation.py has the target
and the loss), then becomes the next round's teacher. The teacher must predict v or x_0: at one
step from pure noise an ε-prediction gives no usable x̂_0 (Salimans & Ho §4).

With --method consistency (Song et al. 2023) the student instead learns, on the teacher's
--start-steps grid, to map every point of a trajectory of the teacher's DDIM solver to the same
clean image as its neighbour one step further down: one step from noise is then a sample, and
more steps alternate x̂_0 and fresh noise (sample.py --sampler cm).

Any diffusion checkpoint minigen writes can teach: pixel or latent (the student works on the
same latents, each training image encoded once by the teacher's frozen autoencoder, which the
student's checkpoint carries), class- or text-conditional (the student keeps the teacher's
tokenizer and text encoder, frozen).

Guidance, by default, is applied to the student, not distilled in: the student learns the
teacher's conditional and unconditional predictions (labels or captions dropped with
--cond-drop, as in training), so classifier-free guidance works on it as on the teacher (two
passes per step). With --guidance-range LO,HI it is distilled in (Meng et al. 2023, §4.1; LCM
does the same): the student takes w as an input (models/unet.py embeds it like t), and learns
the teacher's *guided* output for a w drawn from [LO, HI] per image, so a student step is one
network pass. The first round's teacher is the original model guided by two passes; later
rounds' teachers are students, called with w.

Writes into --out (default runs/distill): last.pt (the run in progress, for --resume), steps_N.pt
at the end of each round (the N-step student, EMA weights, which sample.py and evaluate.py load
like any diffusion checkpoint; sample.py takes N DDIM steps by default), samples_N.png (guided samples
of that student from fixed noise, a row per class) and metrics.jsonl.
"""

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import torch

from minigen import pipelines
from minigen.cli import STEPS, at_least, between, positive, run, setting
from minigen.data import batch_indices, load_dataset
from minigen.device import seed_everything
from minigen.diffusion import ClassifierFreeGuidance, GuidanceInput, SamplerConfig
from minigen.diffusion.distillation import consistency_loss, progressive_loss
from minigen.errors import MinigenError
from minigen.images import save_grid
from minigen.models.text_to_image import TextToImage, TextToImageConfig
from minigen.models.unet import UNet
from minigen.training.checkpoint import save_checkpoint
from minigen.training.diffusion_run import captions, latent_moments
from minigen.training.ema import EMA
from minigen.training.finetune import restart_ema
from minigen.training.lifecycle import Run, RunConfig


METHODS = ("progressive", "consistency")


@dataclass
class DistillConfig(RunConfig):
    teacher: str = setting(None, "the diffusion checkpoint to distil (v- or x0-prediction)")
    method: str = setting("progressive", "progressive (Salimans & Ho 2022: halve the steps, round by round) or "
                                         "consistency (Song et al. 2023: one step, on the teacher's --start-steps "
                                         "grid)", choices=METHODS)
    cd_mu: float = setting(0.95, "consistency: decay of the target network θ⁻ (Song et al.'s μ for CD on CIFAR-10)",
                           check=between(0, 1))
    start_steps: int = setting(32, "DDIM steps the teacher takes; the first student takes half", check=at_least(2))
    final_steps: int = setting(1, "halve until the student takes this many", check=at_least(1))
    steps_per_round: int = setting(250, "optimizer steps of each halving", check=STEPS)
    batch_size: int = setting(64, "images per step", check=at_least(1))
    max_images: int | None = setting(None, "distil on the first N images of the teacher's data (default: all)",
                                     check=at_least(1))
    lr: float = setting(2e-4, "AdamW learning rate at the start of each round, decayed linearly to 0 as "
                              "Salimans & Ho do (their 5e-5 is for 50k-step rounds; 2e-4 is not tuned)",
                        check=positive)
    cond_drop: float = setting(0.1, "probability of the 'null' label, so guidance applies to the student",
                               check=between(0, 1))
    ema_decay: float = setting(0.999, "largest EMA decay (restarted each round); the next teacher and the saved "
                                      "students are the EMA weights", check=between(0, 1))
    guidance_range: str | None = setting(None, "LO,HI: distil guidance in, the student taking w as an input and "
                                                "learning the teacher's guided output for w ~ U[LO, HI] (one pass "
                                                "per step; default: guidance stays two passes on the student)")
    guidance: float = setting(3.0, "classifier-free guidance w for the pictures of each round", runtime=True)
    out: str = setting("runs/distill", "output folder", runtime=True)


def rounds(cfg) -> list[int]:
    """The students' step counts, one per round: start/2, start/4, ..., final (consistency
    distillation: one round, a one-step student)."""
    if cfg.method == "consistency":
        return [1]
    n, out = cfg.start_steps // 2, []
    while n >= cfg.final_steps:
        out.append(n)
        n //= 2
    return out


def guidance_range(text: str | None) -> tuple[float, float] | None:
    """--guidance-range "LO,HI" -> (LO, HI), refused in one line unless 0 <= LO <= HI <= 20."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise MinigenError(f"--guidance-range {text!r}: give two numbers LO,HI, e.g. 1,6") from None
    if not 0 <= lo <= hi <= 20:
        raise MinigenError(f"--guidance-range {text}: need 0 <= LO <= HI <= 20")
    return lo, hi


def student_of(network, guided: bool):
    """A new network of the teacher's architecture, its weights copied (a text encoder frozen), with
    the guidance-scale input when `guided` (its embedding starts at zero: it ignores w at first)."""
    if isinstance(network, TextToImage):
        config = TextToImageConfig(dataclasses.replace(network.config.unet, guidance_embedding=guided),
                                   network.config.text, freeze_text=True, pooled=network.config.pooled)
        student = TextToImage(config)
    else:
        student = UNet(dataclasses.replace(network.config, guidance_embedding=guided))
    missing, unexpected = student.load_state_dict(network.state_dict(), strict=False)
    left = unexpected + [k for k in missing if "guidance_mlp" not in k]    # only the new w-embedding may be new
    if left:
        raise MinigenError(f"the student does not fit the teacher's weights ({left[0]})")
    return student


def lessons(pipe, data, seed: int, device):
    """What the student learns from: clean(index) -> the images (or, for a latent teacher, their
    latents, each image encoded once, drawn afresh from q(z|x)), and condition(index, step) -> the
    network's keyword arguments (captions in a phrasing drawn per step, class labels, or none)."""
    if pipe.latent is not None:
        moments = latent_moments(pipe.latent, data, False, device)[0]     # (N, 2c, h, w)
        clean = lambda index: pipe.latent.draw(*moments[index].to(device).chunk(2, dim=1))
    else:
        clean = lambda index: data.batch(index)[0].to(device)
    if pipe.tokenizer is not None:
        return clean, captions(data, pipe.tokenizer, seed, device)
    return clean, lambda index, step: pipe.condition(data.labels[index]) if pipe.num_classes else {}


def preview_inputs(pipe, data, seed: int, device) -> tuple[torch.Tensor, dict]:
    """Fixed noise and conditions for each round's picture: 4 images per class, or 4 per prompt of
    the first 4 training captions."""
    text = pipe.tokenizer is not None
    rows = 4 if text else max(pipe.num_classes, 1)
    noise = pipe.noise(4 * rows, torch.Generator().manual_seed(seed + 1)).to(device)
    if text:
        return noise, pipe.prompts(data.captions(torch.arange(4).repeat_interleave(4), 0))
    return noise, pipe.condition(torch.arange(len(noise), device=device) // 4) if pipe.num_classes else {}


def at_scale(w: torch.Tensor, model, teacher, target_net, two_pass_teacher: bool):
    """The student, its teacher and the target network at guidance scale w (B,), one per image:
    each takes w as an input (GuidanceInput); the original teacher of the first round is guided
    by its two passes instead, ε̂_∅ + w·(ε̂_c − ε̂_∅) (Meng et al. 2023, §4.1; its w-embedding is
    still zero, so the w it is given changes nothing)."""
    if two_pass_teacher:
        teaching = ClassifierFreeGuidance(GuidanceInput(teacher, w.repeat(2)), w.view(-1, 1, 1, 1))   # (B, 1, 1, 1)
    else:
        teaching = GuidanceInput(teacher, w)
    return GuidanceInput(model, w), teaching, target_net and GuidanceInput(target_net, w)


def main(argv=None) -> int:
    run_ = Run.from_command_line(DistillConfig, "ddpm", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    if cfg.teacher is None:
        raise MinigenError("--teacher: name the diffusion checkpoint to distil")
    halvings = math.log2(cfg.start_steps / cfg.final_steps)
    if cfg.method == "progressive" and (cfg.final_steps >= cfg.start_steps or halvings != int(halvings)):
        raise MinigenError(f"--start-steps {cfg.start_steps}: must be --final-steps {cfg.final_steps} times a power of 2")
    seed_everything(cfg.seed)

    # ---- the teacher, its data, and the student ----------------------------------------------
    pipe = pipelines.load(cfg.teacher, device, kind="ddpm")
    diffusion, text, w_range = pipe.diffusion, pipe.tokenizer is not None, guidance_range(cfg.guidance_range)
    if diffusion.prediction == "eps":
        raise MinigenError(f"--teacher {cfg.teacher}: predicts ε; distil a v- or x0-prediction model "
                           "(train_ddpm.py --prediction v, the default)")
    conditional = pipe.num_classes > 0 or text
    if w_range is not None and not conditional:
        raise MinigenError(f"--guidance-range: {cfg.teacher} is unconditional; there is no guidance to distil in")
    guided = w_range is not None or pipe.guidance_distilled          # the student takes w as an input
    plan = rounds(cfg)
    if cfg.start_steps > diffusion.T:
        raise MinigenError(f"--start-steps {cfg.start_steps}: more than the teacher's T = {diffusion.T}")
    data = load_dataset(pipe.data["dataset"], "train", root=pipe.data["data_root"], size=pipe.data["image_size"],
                        channels=pipe.data["channels"], n=cfg.max_images, seed=cfg.seed)
    say(f"teacher: {cfg.teacher} (step {pipe.step}, predicts {diffusion.prediction}"
        + (", latent" if pipe.latent is not None else "") + (", text" if text else "")
        + f"); data: {pipe.data['dataset']}, {len(data)} images; rounds: {cfg.start_steps} -> "
        + " -> ".join(map(str, plan)) + " steps"
        + (f"; guidance distilled in, w ~ U[{w_range[0]:g}, {w_range[1]:g}]" if w_range else ""))
    original = pipe.network.requires_grad_(False)                     # what the first round's teacher guides
    teacher = student_of(original, guided).to(device).requires_grad_(False).eval()   # this round's teacher
    model = student_of(original, guided).to(device)                  # the student starts as its teacher
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    K = cfg.steps_per_round
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - (step % K) / K)
    ema = EMA(model, max_decay=cfg.ema_decay, power=3 / 4)
    others = {"teacher": teacher}
    if cfg.method == "consistency":       # the target network θ⁻ ← μ·θ⁻ + (1 − μ)·θ, a fixed decay
        target = EMA(model, max_decay=cfg.cd_mu, min_decay=cfg.cd_mu)
        others["target"] = target
    cfg.steps = K * len(plan)                                          # the lifecycle's total
    extra = {"diffusion": dataclasses.asdict(diffusion.config), "classes": pipe.classes, "data": pipe.data,
             "teacher": cfg.teacher, "distilled_steps": plan[0]}
    if pipe.latent is not None:
        extra["latent"] = pipe.latent.state()                          # the frozen autoencoder, carried along
    if text:
        extra.update(condition="text", tokenizer=pipe.tokenizer.state())
    start = run_.attach(model, model.config, ema=ema, optimizer=optimizer, scheduler=scheduler,
                        others=others, extra=extra)
    extra["distilled_steps"] = plan[start // K] if start < cfg.steps else plan[-1]   # a resumed run's round

    clean, condition = lessons(pipe, data, cfg.seed, device)
    fixed_noise, fixed_cond = preview_inputs(pipe, data, cfg.seed, device)

    # ---- training loop: Salimans & Ho Algorithm 2 (or Song et al.'s), one round after another ------
    began = time.perf_counter()
    with run_:
        for step in run_.steps():
            r, N = step // K, plan[step // K]
            if step % K == 0 and step > 0:                 # a new round: the last student teaches
                with torch.no_grad():
                    teacher.load_state_dict(ema.model.state_dict())
                    model.load_state_dict(ema.model.state_dict())
                restart_ema(ema, model)
                optimizer.state.clear()
                extra["distilled_steps"] = N
            model.train()
            index = batch_indices(step, len(data), cfg.batch_size, cfg.seed)
            x0, cond = clean(index), condition(index, step)
            cond = model.drop_condition(cfg.cond_drop, **cond) if conditional else {}
            student, teaching, target_net = model, teacher, target.model if cfg.method == "consistency" else None
            if guided:                                     # one w per image, given to every network as an input
                lo, hi = w_range or (cfg.guidance, cfg.guidance)
                w = lo + (hi - lo) * torch.rand(len(x0), device=device)                 # (B,)
                student, teaching, target_net = at_scale(w, model, teacher, target_net,
                                                         two_pass_teacher=r == 0 and not pipe.guidance_distilled)
            if cfg.method == "progressive":
                loss = progressive_loss(student, teaching, diffusion, x0, N, pipe.clip_x0, **cond)
            else:
                loss = consistency_loss(student, target_net, teaching, diffusion, x0, cfg.start_steps,
                                        pipe.clip_x0, **cond)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            ema.update(model)
            if cfg.method == "consistency":
                target.update(model)
            run_.check_finite("try a lower --lr", loss=loss)
            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), lr=scheduler.get_last_lr()[0], student_steps=N)
            if (step + 1) % K == 0 and run_.main:          # the round's student, kept and pictured
                kept = save_checkpoint(run_.out / f"steps_{N}.pt", kind="ddpm", config=model.config, model=model,
                                       ema=ema, step=step + 1, extra={**extra, "train": dataclasses.asdict(cfg)})
                student_pipe = dataclasses.replace(pipe, network=ema.model)
                x = SamplerConfig("ddim", N, clip_x0=pipe.clip_x0).sample(student_pipe.denoiser(cfg.guidance),
                                                                          fixed_noise, cond=fixed_cond, progress=False)
                grid = save_grid(student_pipe.to_pixels(x), run_.out / f"samples_{N}.png", nrow=8 if not text else 4)
                say(f"round {r + 1}/{len(plan)}: {N}-step student in {kept} and {grid} "
                    f"({time.perf_counter() - began:.0f} s so far in this invocation)")
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code
    say(f"the {plan[-1]}-step student: python sample.py --ckpt {run_.out / f'steps_{plan[-1]}.pt'}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
