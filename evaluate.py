"""Measure the generative trilemma (Xiao et al. 2022) for minigen's models: quality, diversity, speed.

    python evaluate.py --judge runs/vit/last.pt --gan runs/gan/last.pt --ddpm runs/ddpm/last.pt

For each generator (the GAN; the diffusion model with DDPM 1000 steps, DDIM 50 and 10 steps
and DPM-Solver++ at --dpm-steps, at each --guidance scale) it draws -n class-balanced samples with a fixed seed and
reports, judged by the tiny ViT trained on the real data (train_vit.py):

    FD         Fréchet distance between the judge's features of the samples and of real
               training images (Heusel et al. 2017; FID with minigen's own judge)    lower is better
    precision  share of samples inside the real images' feature manifold (quality)     higher
    recall     share of real images inside the samples' manifold (coverage)            higher
    accuracy   the judge's accuracy on the requested classes (does a "7" come out a 7?) higher
    IS         Inception-Score-style exp(E KL(p(y|x) ‖ p(y))) from the judge          higher, at most K
    CAS        Classification Accuracy Score (Ravuri & Vinyals 2019): a fresh classifier trained
               on the samples only, tested on real test images                        higher
    grainy     share of samples with more speckles (isolated pixels on a flat region) than 99% of
               real training images have: residual noise (python -m minigen.evaluation.grain) lower
    images/s   sampling speed (and seconds per image)

The first row measures held-out real test images against the training images: the floor
that a perfect generator would reach with the same number of images. An autoencoder (--vae, or
the one inside a latent diffusion checkpoint) adds a row of its reconstructions of those test
images, with their PSNR and SSIM: the ceiling any latent model on it can reach.
Writes OUT/trilemma.json and OUT/trilemma.md (default OUT: runs/eval).
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minigen import pipelines
from minigen.cli import (GUIDANCE, SEED, STEPS, Parser, add_config_args, at_least, between, flag_of, interval, non_negative,
                         number, parse_config, run, setting, writable_folder)
from minigen.data import DataConfig, to_float, train_and_test
from minigen.data.readers import read_samples
from minigen.device import pick_device, seed_everything
from minigen.diffusion import SamplerConfig
from minigen.errors import MinigenError
from minigen.evaluation.metrics import (accuracy, frechet_distance_of, grainy_fraction, inception_score, precision_recall,
                                        clip_score, psnr, speckle_limit, ssim)
from minigen.models.vit import ViT, ViTConfig
from minigen.models.vit import preset as vit_preset


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def numbers(base, check=None):
    """An argparse type for a comma-separated list of numbers, each checked like cli.number."""
    one = number(base, check)
    return lambda text: [one(part) for part in text.split(",")]


@dataclass
class EvaluateConfig:
    judge: str = setting(None, "ViT checkpoint from train_vit.py, trained on the same data", required=True)
    gan: str | None = setting(None, "GAN checkpoint from train_gan.py")
    ddpm: str | None = setting(None, "diffusion checkpoint from train_ddpm.py or train_ldm.py (class-conditional)")
    samples: list | None = setting(None, "samples from any model: uint8 `images` (N, H, W, C) and, for class accuracy "
                                         "and CAS, `labels` (sample.py --save-npz writes them); repeatable, one row each",
                                   repeat=True, metavar="FILE.npz")
    only_classes: str | None = setting(None, "comma-separated class names: draw samples of these classes only and "
                                             "compare them with the real images of these classes (e.g. a class a "
                                             "model was fine-tuned on)", metavar="NAMES")
    drop_classes: str | None = setting(None, "comma-separated class names left out of the samples and of the real "
                                             "images", metavar="NAMES")
    n: int = setting(200, "samples per row", check=between(10, 50_000), flag="-n")
    guidance: tuple = setting((1.0, 3.0), "comma-separated guidance scales for the DDIM and DPM-Solver++ rows",
                              parse=numbers(float, GUIDANCE), metavar="W,...")
    guidance_interval: tuple | None = setting(None, "guide only at noise levels σ in (LOW, HIGH], e.g. 0.28,5.42 "
                                                    "(Kynkäänniemi et al. 2024)", parse=interval, metavar="LOW,HIGH")
    guidance_rescale: float = setting(0.0, "rescaled guidance with weight PHI, e.g. 0.7 (Lin et al. 2024; 0: off)",
                                      check=between(0, 1), metavar="PHI")
    vae: str | None = setting(None, "a VAE (train_vae.py): a row of its prior samples, unconditional", metavar="CKPT")
    clip: str | None = setting(None, "a CLIP (train_clip.py) on the same data: adds CLIPScore, each class-conditional "
                                     "sample against its class's caption", metavar="CKPT")
    ddpm_steps: int = setting(1000, "steps of the ancestral DDPM row (0: skip)", check=non_negative)
    ddpm_n: int | None = setting(None, "samples in the ancestral DDPM row, which is 20-100x slower than the others "
                                       "(default: -n)", check=at_least(1))
    ddim_steps: tuple = setting((50, 10), "comma-separated DDIM step counts", parse=numbers(int, at_least(1)),
                                metavar="N,...")
    dpm_steps: tuple = setting((), "comma-separated DPM-Solver++(2M) step counts, e.g. 5,10,20",
                               parse=numbers(int, at_least(1)), metavar="N,...")
    cm_steps: tuple = setting((), "comma-separated step counts of multistep consistency sampling, for a consistency "
                                  "student (distill.py --method consistency)", parse=numbers(int, at_least(1)),
                              metavar="N,...")
    cas_steps: int = setting(300, "training steps of the CAS classifier", check=STEPS)
    seed: int = setting(0, "seed of the samples", check=SEED)
    out: str = setting("runs/eval", "folder for trilemma.json and trilemma.md")
    device: str | None = setting(None, "cpu | cuda | mps (default: the best available)")


# The settings of the diffusion rows: given without --ddpm they would change nothing.
DIFFUSION_ROWS = ("guidance", "guidance_interval", "guidance_rescale", "ddpm_steps", "ddpm_n", "ddim_steps", "dpm_steps",
                  "cm_steps")


def refuse_rows_not_drawn(args: EvaluateConfig, given: set[str]) -> None:
    """A setting of the diffusion rows given without --ddpm: said in one line, not ignored."""
    rows_only = [name for name in DIFFUSION_ROWS if name in given]
    if rows_only and not args.ddpm:
        raise MinigenError(f"{flag_of(EvaluateConfig, rows_only[0])} sets the diffusion rows: give --ddpm CKPT")


@torch.no_grad()
def judge_outputs(judge, x: torch.Tensor, device, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's penultimate features and class probabilities of images x (N, C, H, W)."""
    feats, probs = [], []
    for start in range(0, len(x), batch):
        f = judge.features(x[start:start + batch].to(device))
        feats.append(f.cpu())
        probs.append(torch.softmax(judge.head(f), dim=1).cpu())
    return torch.cat(feats), torch.cat(probs)


def classification_accuracy_score(x, y, test, config: ViTConfig, steps: int, seed: int, device) -> float:
    """Train a fresh tiny ViT on (x, y) only; return its accuracy on the real test images."""
    torch.manual_seed(seed)
    model = ViT(vit_preset("tiny", image_channels=config.image_channels, image_size=config.image_size,
                           num_classes=config.num_classes, patch_size=config.patch_size, depth=2, dim=64)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(64, len(x)),), generator=g)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device), label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tx, ty = test.batch(torch.arange(min(len(test), 2000)))
    with torch.no_grad():
        return accuracy(model(tx.to(device)).cpu(), ty)


def timed(draw, repeats: int = 5):
    """draw() `repeats` times: its last result and the median seconds (a GAN or a VAE draws in
    milliseconds, where one timing is mostly noise)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x = draw()
        times.append(time.perf_counter() - start)
    return x, sorted(times)[len(times) // 2]


class Table:
    """The rows of the trilemma table: each generator's samples judged against the real images."""

    def __init__(self, judge, real_feats, grain_limit, test, chosen, cas_steps: int, seed: int, device, clip=None,
                 captioning=None):
        self.judge, self.real_feats, self.grain_limit, self.test, self.chosen = judge, real_feats, grain_limit, test, chosen
        self.cas_steps, self.seed, self.device, self.clip, self.captioning = cas_steps, seed, device, clip, captioning
        self.rows = []

    @torch.no_grad()
    def clip_score_of(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """CLIPScore (Hessel et al. 2021) of each image against its class's caption (phrasing 0), with minigen's CLIP."""
        texts = self.clip.encode_text(self.captioning.describe(y[:, None], 0))
        images = torch.cat([self.clip.encode_image(x[i:i + 250]) for i in range(0, len(x), 250)])
        return clip_score(images.cpu(), texts.cpu())

    def measure(self, name: str, x: torch.Tensor, y: torch.Tensor | None, seconds: float | None, note: str = ""):
        """One row; without labels (y None) there is no class accuracy and no CAS."""
        feats, probs = judge_outputs(self.judge, x, self.device)
        precision, recall = precision_recall(self.real_feats[:len(x)], feats, k=3)
        row = {"model": name, "n": len(x), "FD": frechet_distance_of(self.real_feats, feats),
               "precision": precision, "recall": recall, "accuracy": accuracy(probs, y) if y is not None else None,
               "IS": inception_score(probs),
               "CAS": classification_accuracy_score(x, y, self.test, self.judge.config, self.cas_steps, self.seed,
                                                    self.device)
               if y is not None and len(self.chosen) > 1 else None,         # one class: nothing to tell apart
               "grainy": grainy_fraction(x, self.grain_limit),
               "CLIPScore": self.clip_score_of(x, y) if self.clip is not None and y is not None else None,
               "images_per_s": len(x) / seconds if seconds else None,
               "s_per_image": seconds / len(x) if seconds else None, "note": note}
        self.rows.append(row)
        speed = f"{row['images_per_s']:.1f} img/s" if seconds else "-"
        print(f"{name:28s} FD {row['FD']:8.3f}  P {precision:.3f}  R {recall:.3f}  acc {fmt(row['accuracy'])}  "
              f"IS {row['IS']:.2f}  CAS {fmt(row['CAS'])}  grainy {row['grainy']:.1%}  "
              + (f"CLIPScore {fmt(row['CLIPScore'])}  " if self.clip is not None else "") + speed)

    def markdown(self) -> str:
        score = self.clip is not None                    # the CLIPScore column, with a CLIP
        header = ("| model | n | FD ↓ | precision ↑ | recall ↑ | class accuracy ↑ | IS ↑ | CAS ↑ | grainy ↓ | "
                  + ("CLIPScore ↑ | " if score else "") + "images/s ↑ | s/image |\n|---|---|---|---|---|---|---|---|---|"
                  + ("---|" if score else "") + "---|---|")
        return "\n".join([header] + [
            f"| {r['model']} | {r['n']} | {r['FD']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {fmt(r['accuracy'])} "
            f"| {r['IS']:.2f} | {fmt(r['CAS'])} | {r['grainy']:.1%} | " + (f"{fmt(r['CLIPScore'])} | " if score else "")
            + (f"{r['images_per_s']:.1f} | {r['s_per_image']:.4f} |" if r["images_per_s"] else "- | - |")
            for r in self.rows])


def main(argv=None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, EvaluateConfig)
    args, given = parse_config(parser, EvaluateConfig, argv)
    refuse_rows_not_drawn(args, given)
    device, reason = pick_device(args.device)
    print(f"device: {reason}")
    out = writable_folder(args.out)

    # ---- the judge and the real data ---------------------------------------------------------
    judge_pipe = pipelines.load(args.judge, device, kind="vit")
    gan = pipelines.load(args.gan, device, kind="gan") if args.gan else None
    vae = pipelines.load(args.vae, device, kind="vae") if args.vae else None
    clip = pipelines.load(args.clip, device, kind="clip") if args.clip else None
    samples = {path: read_samples(path) for path in args.samples or ()}     # read (and refused) before any work
    pipe = pipelines.load(args.ddpm, device, kind="ddpm") if args.ddpm else None
    if pipe is not None and pipe.tokenizer is not None:
        raise MinigenError(f"{args.ddpm}: a text-conditional model draws prompts, not classes; measure it with "
                           "python -m minigen.evaluation.prompts")
    runs = []                                       # (sampler, steps, guidance) of the diffusion rows
    if pipe is not None:
        runs = [("ddpm", args.ddpm_steps, 3.0)] if args.ddpm_steps else []
        runs += [("ddim", steps, w) for steps in args.ddim_steps for w in args.guidance]
        runs += [("dpm++", steps, w) for steps in args.dpm_steps for w in args.guidance]
        runs += [("cm", steps, w) for steps in args.cm_steps for w in args.guidance]
        too_many = [steps for _, steps, _ in runs if steps > pipe.diffusion.T]
        if too_many:
            raise MinigenError(f"{too_many[0]} steps: more than the model's T = {pipe.diffusion.T}")
    judge, data = judge_pipe.network, judge_pipe.data
    kw = dict(root=data["data_root"], size=data["image_size"], channels=data["channels"])
    train, test = train_and_test(data["dataset"], **kw)
    selection = DataConfig(only_classes=args.only_classes, drop_classes=args.drop_classes)
    train, test = selection.select(train), selection.select(test)
    if len(test) < 10:
        raise MinigenError(f"{args.judge}: its data set has {len(test)} test images; the statistics need at least 10")
    K = judge.config.num_classes
    for path, maker in ((args.gan, gan), (args.vae, vae), (args.ddpm, pipe)):     # before any work, not after it
        if maker is not None and maker.image_shape != train.shape:
            raise MinigenError(f"{path}: makes {'x'.join(map(str, maker.image_shape))} images, the judge's "
                               f"data is {'x'.join(map(str, train.shape))}")
    if clip is not None:
        if clip.image_shape != train.shape:
            raise MinigenError(f"--clip {args.clip}: sees {'x'.join(map(str, clip.image_shape))} images, the judge's data "
                               f"is {'x'.join(map(str, train.shape))}")
        if len(train.captioning.attributes) != 1:
            raise MinigenError(f"--clip: {data['dataset']}'s captions name {len(train.captioning.attributes)} attributes; a "
                               "class label says only one of them, so CLIPScore needs the prompts of a text-to-image model")
    for path, (images, file_labels) in samples.items():
        if images.shape[1:] != train.shape:
            raise MinigenError(f"--samples {path}: images of {'x'.join(map(str, images.shape[1:]))}, the judge's data "
                               f"is {'x'.join(map(str, train.shape))}")
        if file_labels is not None and not ((file_labels >= 0) & (file_labels < K)).all():
            raise MinigenError(f"--samples {path}: labels outside the judge's classes 0..{K - 1}")
        if len(images) < 10:
            raise MinigenError(f"--samples {path}: {len(images)} images; the statistics need at least 10")
    trained = f"{judge_pipe.test_accuracy:.2%} test accuracy" if judge_pipe.test_accuracy is not None else "accuracy not measured"
    print(f"judge: ViT trained on {data['dataset']} ({trained})")
    n = args.n
    chosen = train.labels.unique()                                   # the classes measured (all, or the chosen ones)
    labels = chosen[torch.arange(n) % len(chosen)]                   # class-balanced requests
    real_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:max(n, 2000)]
    real_images = train.batch(real_idx)[0]
    real_feats, _ = judge_outputs(judge, real_images, device)
    grain_limit = speckle_limit(real_images)                        # speckles 99% of real images stay within

    table = Table(judge, real_feats, grain_limit, test, chosen, args.cas_steps, args.seed, device, clip, train.captioning)

    # ---- the floor: real held-out images --------------------------------------------------
    tx, ty = test.batch(torch.arange(min(n, len(test))))
    table.measure("real test images (floor)", tx, ty, None)

    # ---- autoencoders' reconstructions of the same test images: a latent model's ceiling --------
    ceilings = ([("VAE reconstructions (ceiling)", vae.reconstruct)] if vae is not None else []) + (
        [("its autoencoder's reconstructions", pipe.reconstruct)] if pipe is not None and pipe.latent is not None else [])
    for name, reconstruct in ceilings:
        rec = torch.cat([reconstruct(tx[i:i + 250].to(device)).cpu() for i in range(0, len(tx), 250)])
        p, s = psnr(rec, tx), ssim(rec, tx)
        table.measure(name, rec, ty, None, note=f"PSNR {p:.2f} dB, SSIM {s:.3f} on {len(tx)} test images")
        print(f"{'':28s} reconstruction PSNR {p:.2f} dB, SSIM {s:.3f} (held-out test images)")

    # ---- the GAN -----------------------------------------------------------------------------
    if gan is not None:
        seed_everything(args.seed)
        x, seconds = timed(lambda: gan.sample(labels, n, torch.Generator(device=device).manual_seed(args.seed))[0])
        table.measure("GAN", x.cpu(), labels, seconds)

    # ---- the VAE as a generator: decoded draws from the prior, unconditional -------------------
    if vae is not None:
        x, seconds = timed(lambda: vae.sample(n, torch.Generator(device=device).manual_seed(args.seed)))
        table.measure("VAE (prior samples)", x.cpu(), None, seconds)

    # ---- the diffusion model at several step counts and guidance scales ------------------
    if pipe is not None:
        for sampler, steps, w in runs:
            m = (args.ddpm_n or n) if sampler == "ddpm" else n
            generator = torch.Generator(device=device).manual_seed(args.seed)
            start = time.perf_counter()
            sampling = SamplerConfig(sampler, steps, clip_x0=pipe.clip_x0)
            x = pipe.to_pixels(sampling.sample(pipe.denoiser(w, sigma_interval=args.guidance_interval,
                                                             rescale=args.guidance_rescale),
                                               pipe.noise(m, generator), cond=pipe.condition(labels[:m]),
                                               generator=generator))
            where = f" at σ in ({args.guidance_interval[0]:g}, {args.guidance_interval[1]:g}]" if args.guidance_interval else ""
            where += f", rescaled φ={args.guidance_rescale:g}" if args.guidance_rescale else ""
            name = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++", "cm": "consistency"}[sampler]
            table.measure(f"{name} {steps} steps, w={w:g}{where}", x.cpu(), labels[:m], time.perf_counter() - start)

    # ---- samples from any model, from files ----------------------------------------------------
    for path, (images, file_labels) in samples.items():
        y = torch.from_numpy(file_labels).long() if file_labels is not None else None
        table.measure(f"samples: {Path(path).name}", to_float(torch.from_numpy(images)), y, None)

    # ---- report -------------------------------------------------------------------------------
    text = table.markdown()
    (out / "trilemma.md").write_text(text + "\n")
    (out / "trilemma.json").write_text(json.dumps({"device": reason, "seed": args.seed, "rows": table.rows}, indent=2))
    print("\n" + text)
    print(f"\nwrote {out / 'trilemma.md'} and {out / 'trilemma.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
