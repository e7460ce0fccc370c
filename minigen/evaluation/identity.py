"""Which emoji is this? A judge of identity and skin tone for samples of the emoji data set.

    python -m minigen.evaluation.identity --ckpt runs/t2i-emoji/last.pt -n 200

It learns nothing, so it cannot be taught to be lenient:

    identity   the nearest real emoji among all of them (the test split: every one of the list),
               each image blurred by a Gaussian of σ = 1 px per 32 (fine detail is what a
               sample gets wrong first) and compared pixel by pixel (Euclidean). top-1: the
               nearest is the emoji asked for; top-5: it is among the five nearest; role: the
               nearest has the asked role in any tone (data/emoji.py: "firefighter" of
               "firefighter: dark skin tone").
    skin tone  each tone's skin colour measured on the data itself (the median non-white colour
               of "raised hand" in that tone, and in the tone-less yellow); a picture's tone is
               the tone most of its skin-coloured pixels (within TONE_RADIUS of a reference)
               are nearest to, "" when fewer than TONE_MIN of its pixels are skin of a tone.

Prompts are phrasing 0 (the name) of -n emoji of the training split and -n held-out ones (or all
of them, 124). The same readings of the real images (the judge's ceiling) and of the real images
through the model's autoencoder and back (the best a latent model can give back) are printed
beside; and the Fréchet distance of the samples to the real emoji in the judge's space (its 64
leading principal components, fitted on the real emoji). Writes OUT/identity.json.
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from .. import pipelines
from ..cli import GUIDANCE, SEED, Parser, at_least, number, run, writable_folder
from ..data import data_root, load_dataset
from ..data import emoji as emoji_data
from ..data.emoji import TONES
from ..diffusion import SAMPLERS, SamplerConfig
from .judges import gaussian_blur
from .metrics import frechet_distance_of

TONE_RADIUS = 0.12        # RGB in [0, 1]: a pixel within this of a tone's colour is skin of that tone
TONE_MIN = 0.02           # a picture with fewer skin pixels of a tone than this share has no tone


def features(x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [−1, 1] -> the judge's space (N, 3·H·W): blurred by σ = H/32 px."""
    return gaussian_blur(x.float(), x.shape[-1] / 32).flatten(1)


def nearest(x: torch.Tensor, real: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The indices (N, k) of the k nearest real images (in features) to each of x, nearest first."""
    f_real = features(real)
    out = [torch.cdist(features(part), f_real).topk(k, dim=1, largest=False).indices for part in x.split(256)]
    return torch.cat(out)


def tone_colours(data, emoji: list) -> torch.Tensor:
    """(6, 3) RGB in [0, 1]: the skin of "raised hand" in each of TONES, then the tone-less yellow
    (data: the test split, every emoji of the list `emoji`, in its order)."""
    names = {e.name: i for i, e in enumerate(emoji)}
    rows = [names[f"raised hand: {t} skin tone"] for t in TONES] + [names["raised hand"]]
    x = (data.batch(torch.tensor(rows))[0] + 1) / 2                       # (6, 3, H, W)
    pixels = x.flatten(2).transpose(1, 2)                                 # (6, H·W, 3)
    out = []
    for p in pixels:
        skin = p[(1 - p).norm(dim=1) > 0.25]                              # not the white background
        out.append(skin.median(dim=0).values)
    return torch.stack(out)


def read_tone(x: torch.Tensor, colours: torch.Tensor) -> list[str]:
    """Each picture's skin tone: one of TONES, or "" (no tone, or the tone-less yellow)."""
    pixels = ((x.float() + 1) / 2).flatten(2).transpose(1, 2)             # (N, H·W, 3)
    d = torch.cdist(pixels, colours[None].expand(len(x), -1, -1))         # (N, H·W, 6)
    dist, which = d.min(dim=2)
    near = dist < TONE_RADIUS
    counts = torch.stack([(near & (which == k)).float().mean(1) for k in range(len(TONES))], dim=1)   # (N, 5)
    best = counts.argmax(1)
    return [TONES[b] if counts[i, b] >= TONE_MIN else "" for i, b in enumerate(best.tolist())]


def read(x: torch.Tensor, asked: torch.Tensor, emoji: list, real: torch.Tensor, colours: torch.Tensor) -> dict:
    """top-1, top-5, role and (on emoji with a tone) skin tone of pictures x asked as emoji `asked`
    (indices into the list `emoji`, whose pictures are `real`); and top-5 of the names whose role
    comes in no other tone ("one of a kind": a person's tones are near twins, so the five nearest
    to a person drawn in the right role hold the asked one whatever its tone)."""
    top = nearest(x, real)                                                # (N, 5) indices into the list
    tones = read_tone(x, colours)
    toned = [i for i, a in enumerate(asked.tolist()) if emoji[a].tone in TONES]
    family = Counter(e.role for e in emoji)                               # role -> how many tones of it
    plain = torch.tensor([family[emoji[a].role] == 1 for a in asked.tolist()])
    hit5 = (top == asked[:, None]).any(1).float()                         # (N,)
    return {"top1": (top[:, 0] == asked).float().mean().item(),
            "top5": hit5.mean().item(),
            "top5_plain": hit5[plain].mean().item() if plain.any() else None, "plain": int(plain.sum()),
            "role": sum(emoji[n].role == emoji[a].role for n, a in zip(top[:, 0].tolist(), asked.tolist())) / len(x),
            "tone": sum(tones[i] == emoji[int(asked[i])].tone for i in toned) / len(toned) if toned else None,
            "toned": len(toned)}


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.evaluation.identity", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a text-to-image checkpoint trained on --dataset emoji")
    parser.add_argument("-n", type=number(int, at_least(1)), default=200,
                        help="prompts of seen names and of held-out ones, each (default: 200)")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLERS, help="the sampler (default: ddim)")
    parser.add_argument("--steps", type=number(int, at_least(1)), default=50, help="sampler steps (default: 50)")
    parser.add_argument("--guidance", type=number(float, GUIDANCE), default=3.0, help="guidance w (default: 3)")
    parser.add_argument("--seed", type=number(int, SEED), default=0, help="seed of the prompts and noise (default: 0)")
    parser.add_argument("--out", default="runs/eval-identity", help="folder for identity.json")
    args = parser.parse_args(argv)
    out = writable_folder(args.out)

    pipe = pipelines.load(args.ckpt, kind="ddpm")
    if pipe.tokenizer is None or pipe.data.get("dataset") != "emoji":
        parser.error(f"--ckpt {args.ckpt}: not a text-to-image model of the emoji data set")
    root = Path(pipe.data.get("data_root") or data_root())
    data = load_dataset("emoji", "test", root=root, size=pipe.data.get("image_size"))
    catalogue = emoji_data.catalogue(root / "emoji")
    emoji = catalogue.emoji
    real = data.batch(torch.arange(len(data)))[0]                         # every emoji, in list order
    colours = tone_colours(data, emoji)
    held = torch.from_numpy(catalogue.held_out)
    g = torch.Generator().manual_seed(args.seed)
    pick = lambda rows: rows.nonzero().flatten()[torch.randperm(int(rows.sum()), generator=g)[:args.n]]
    report = {"args": vars(args)}
    samples, reals = [], []
    for split, index in (("seen", pick(~held)), ("held_out", pick(held))):
        prompts = data.captions(index, 0)
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        x = pipe.to_pixels(SamplerConfig(args.sampler, args.steps, clip_x0=pipe.clip_x0).sample(
            pipe.denoiser(args.guidance), pipe.noise(len(index), generator), generator=generator,
            cond=pipe.prompts(prompts), progress=False)).cpu().clamp(-1, 1)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            round_trip = torch.cat([pipe.reconstruct(part).cpu() for part in real[index].split(256)]).clamp(-1, 1)
        row = {"n": len(index), "samples": read(x, index, emoji, real, colours),
               "real": read(real[index], index, emoji, real, colours),
               "round_trip": read(round_trip, index, emoji, real, colours), "images_per_s": len(index) / seconds}
        report[split] = row
        samples.append(x)
        reals.append(real[index])
        for name in ("real", "round_trip", "samples"):
            r = row[name]
            print(f"{split:9s} {name:10s}: top-1 {r['top1']:.1%}, top-5 {r['top5']:.1%}, role {r['role']:.1%}"
                  + (f", skin tone {r['tone']:.1%} (of {r['toned']})" if r["tone"] is not None else "")
                  + (f"; top-5 of one-of-a-kind names {r['top5_plain']:.1%} (of {r['plain']})" if r["plain"] else ""))
        print(f"{split:9s} {row['images_per_s']:.1f} images/s")
    f_real = features(real)                                              # (3655, D)
    basis = torch.pca_lowrank(f_real, q=64, center=True)[2]              # (D, 64): the real emoji's leading axes
    mean = f_real.mean(0)
    project = lambda x: (features(x) - mean) @ basis
    report["fd"] = frechet_distance_of(project(real), project(torch.cat(samples)))
    print(f"FD of the {len(torch.cat(samples))} samples to the {len(real)} real emoji, in the judge's space (PCA 64): "
          f"{report['fd']:.2f}")
    (out / "identity.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'identity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
