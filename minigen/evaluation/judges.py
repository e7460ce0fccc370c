"""Is a judge hard to fool? Every judge of prompt accuracy, scored on images made as hard as a
model's samples.

    python -m minigen.evaluation.judges --judge runs/judge/last.pt --clip runs/clip/last.pt \
        --autoencoder runs/vae-cshapes-f2/last.pt --samples runs/t2i/last.pt

A judge trained on sharp real pictures is asked about blurry samples: what it says there is an
extrapolation. So each judge reads four sets made from the same test facts of captioned-shapes
(-n seen and -n held-out combinations):

    real        the test images
    round trip  through the --autoencoder and back: the best a latent model can give back
    blurred     the test images under a Gaussian blur of σ px: σ = --blur, or the σ at which the
                real images' edges are as steep as --samples' (`sharpness`, matched by bisection)
    blob        controls: each image drawn again as a disc, at the same colour, place, size and
                background, blurred by the same σ. The right reading of a blob is "circle"; a
                judge that reads the blob drawn for a square as a square would call a round
                smudge a square. Its rate of that is "fooled"; a judge fooled on more than
                --max-fooled of the blobs is refused as a judge (said, and exit status 1).

Judges: the ink reader (ink.py: measures, no training; always), the attribute ViT (--judge,
train_vit.py --attributes) and the CLIP zero-shot (--clip). Shape is reported for small and
large shapes apart: small shapes are where samples fail. Writes OUT/judges.json.
"""

import argparse
import json

import torch
import torch.nn.functional as F

from .. import pipelines
from ..cli import SEED, Parser, between, number, run, writable_folder
from ..data import load_dataset
from ..data.captioned import SHAPES, draw
from ..diffusion import SamplerConfig
from .ink import coverage, read_ink
from .prompts import read_attributes

NAMES = ["shape", "colour", "size", "position", "background"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (N, C, H, W) blurred by a Gaussian of σ pixels (separable, edges reflected)."""
    if sigma <= 0:
        return x
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-t**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def sharpness(x: torch.Tensor) -> float:
    """How steep the shapes' edges are: the steepest rise of the ink's coverage (ink.coverage: 0
    on the background, 1 inside, the sensor noise cut off), the mean of each image's ten largest
    |∇c| per pixel (central differences), averaged over images in [−1, 1]. A sharp edge rises
    by about 1 a pixel; a blur of σ spreads it over ~2.5σ. (The mean |Laplacian| of the picture
    itself was tried first: it measures the real images' sensor noise more than their edges.)"""
    c = coverage((x.float().clamp(-1, 1) + 1) / 2)[0]                                  # (N, H, W)
    gx = (c[:, 1:-1, 2:] - c[:, 1:-1, :-2]) / 2
    gy = (c[:, 2:, 1:-1] - c[:, :-2, 1:-1]) / 2
    steep = (gx**2 + gy**2).sqrt().flatten(1).topk(10, dim=1).values.mean(dim=1)
    return steep.mean().item()


def matched_blur(real: torch.Tensor, target: float, high: float = 3.0) -> float:
    """The σ at which the real images are as sharp as `target` (bisection: blur only lowers it)."""
    if sharpness(real) <= target:
        return 0.0
    low = 0.0
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if sharpness(gaussian_blur(real, mid)) > target else (low, mid)
    return (low + high) / 2


def blobs(facts: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Each fact drawn as a disc (same colour, place, size and background), blurred by σ; [−1, 1]."""
    as_disc = facts.clone()
    as_disc[:, 0] = SHAPES.index("circle")
    x = torch.from_numpy(draw(as_disc, torch.Generator().manual_seed(seed))).float() / 127.5 - 1
    return gaussian_blur(x, sigma)


def scores(read, x: torch.Tensor, facts: torch.Tensor, blob: bool = False) -> dict:
    """A judge's accuracy per attribute, on all five, and on shape for small and large shapes; on
    blobs, how often it reads "circle" and how often the shape asked (when not a circle)."""
    got = read(x)
    out = {name: (got[:, a] == facts[:, a]).float().mean().item() for a, name in enumerate(NAMES)}
    small = facts[:, 2] == 0
    if blob:
        circle, asked = SHAPES.index("circle"), facts[:, 0] != SHAPES.index("circle")
        out = {name: out[name] for name in NAMES[1:]}            # the blob keeps every fact but its shape
        out["read_as_circle"] = (got[:, 0] == circle).float().mean().item()
        out["fooled"] = (got[asked, 0] == facts[asked, 0]).float().mean().item()
        out["fooled_small"] = (got[asked & small, 0] == facts[asked & small, 0]).float().mean().item()
        return out
    out["all"] = (got == facts).all(1).float().mean().item()
    out["shape_small"] = (got[small, 0] == facts[small, 0]).float().mean().item()
    out["shape_large"] = (got[~small, 0] == facts[~small, 0]).float().mean().item()
    return out


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.evaluation.judges", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", help="an attribute classifier from train_vit.py --attributes")
    parser.add_argument("--clip", help="a CLIP from train_clip.py (read zero-shot)")
    parser.add_argument("--autoencoder", help="a train_vae.py checkpoint of captioned-shapes: the round-trip set")
    parser.add_argument("--samples", help="a text-to-image checkpoint whose samples' sharpness sets the blur")
    parser.add_argument("--blur", type=number(float, between(0, 5)), help="the blur's σ in pixels (instead of --samples)")
    parser.add_argument("-n", type=number(int, between(1, 5000)), default=200, help="seen and held-out facts, each (default: 200)")
    parser.add_argument("--max-fooled", type=number(float, between(0, 1)), default=0.05,
                        help="a judge fooled by more of the blobs is refused (default: 0.05)")
    parser.add_argument("--seed", type=number(int, SEED), default=0, help="which facts and blobs (default: 0)")
    parser.add_argument("--out", default="runs/eval-judges", help="folder for judges.json")
    args = parser.parse_args(argv)
    out = writable_folder(args.out)
    if args.blur is None and args.samples is None:
        parser.error("say how blurry the samples are: --samples CKPT (measured) or --blur SIGMA")
    data = load_dataset("captioned-shapes", "test")
    judges = {"ink": read_ink}
    if args.judge:
        classifier = pipelines.load(args.judge, kind="vit")
        if classifier.attributes != {k: list(v) for k, v in data.captioning.attributes.items()}:
            parser.error(f"--judge {args.judge}: not an attribute classifier of captioned-shapes")
        judges["classifier"] = classifier.read_attributes
    if args.clip:
        clip = pipelines.load(args.clip, kind="clip")
        judges["clip"] = lambda x: read_attributes(clip, data, x)
    autoencoder = pipelines.load(args.autoencoder, kind="vae") if args.autoencoder else None
    sampler = pipelines.load(args.samples, kind="ddpm") if args.samples else None

    # ---- the facts, and the four sets made of them ---------------------------------------------
    g = torch.Generator().manual_seed(args.seed)
    held = torch.from_numpy(data.captioning.held_out(data.facts.numpy()))
    pick = lambda rows: rows.nonzero().flatten()[torch.randperm(int(rows.sum()), generator=g)[:args.n]]   # noqa: E731
    index = torch.cat([pick(~held), pick(held)])
    facts, real = data.facts[index], data.batch(index)[0]
    sigma, report = args.blur, {"args": vars(args), "n": len(index)}
    if sigma is None:
        prompts = data.captions(index, 0)
        generator = torch.Generator().manual_seed(args.seed)
        samples = sampler.to_pixels(SamplerConfig("ddim", 50, clip_x0=sampler.clip_x0).sample(
            sampler.denoiser(3.0), sampler.noise(len(prompts), generator), generator=generator,
            cond=sampler.prompts(prompts), progress=True)).cpu()
        report["sharpness"] = {"real": sharpness(real), "samples": sharpness(samples)}
        sigma = matched_blur(real, report["sharpness"]["samples"])
        print(f"sharpness (steepest rise of the ink a pixel): real {report['sharpness']['real']:.4f}, samples "
              f"{report['sharpness']['samples']:.4f}: matched by a blur of σ = {sigma:.2f} px")
    report["sigma"] = sigma
    sets = {"real": real, "blurred": gaussian_blur(real, sigma)}
    if autoencoder is not None:
        sets["round trip"] = torch.cat([autoencoder.reconstruct(real[i:i + 250]).cpu() for i in range(0, len(real), 250)])

    # ---- every judge on every set, and on the blobs -----------------------------------------------
    refused = []
    for name, read in judges.items():
        report[name] = {label: scores(read, x, facts) for label, x in sets.items()}
        report[name]["blob"] = scores(read, blobs(facts, sigma, args.seed), facts, blob=True)
        for label, s in report[name].items():
            if label == "blob":
                print(f"{name:10s} blob controls: read as circle {s['read_as_circle']:.1%}, fooled (read as the "
                      f"shape asked) {s['fooled']:.1%} ({s['fooled_small']:.1%} of small ones)")
            else:
                print(f"{name:10s} {label:10s}: all five {s['all']:.1%}; " + ", ".join(f"{k} {s[k]:.1%}" for k in NAMES)
                      + f"; shape of small {s['shape_small']:.1%}, of large {s['shape_large']:.1%}")
        if report[name]["blob"]["fooled"] > args.max_fooled:
            refused.append(name)
    report["refused"] = refused
    (out / "judges.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'judges.json'}")
    if refused:
        print(f"refused as judges (fooled by more than {args.max_fooled:.0%} of the blobs): {', '.join(refused)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
