"""Does a text-to-image model draw what its prompt says? Prompt accuracy, judged two ways.

    python -m minigen.evaluation.prompts --ckpt runs/t2i/last.pt --clip runs/clip/last.pt \
        --judge runs/attributes/last.pt

Prompts are the captions (phrasing 0) of test images of captioned-shapes: --n of combinations
seen in training and --n of the held-out ones (every green triangle, ...). One sample per
prompt, --sampler (DDIM) in --steps with classifier-free guidance --guidance. The CLIP reads
each sample's attributes zero-shot (metrics.zero_shot_attributes: every combination's caption,
the most probable value of each attribute); a sample is right when every attribute it was
prompted with is read back. The second judge (--judge) is an attribute classifier trained on the real
images alone (train_vit.py --attributes): one softmax per attribute, no text, no CLIP. Each
judge on the real test images behind the prompts is its own ceiling, shown beside. With
--judge, also the Fréchet distance, precision and recall of all the samples against those real
images, in the attribute judge's features (Heusel et al. 2017; Kynkäänniemi et al. 2019): a
trilemma row. On captioned-shapes a third judge always reads too: the ink reader (ink.py), which
learns nothing: it measures the ink and asks which shape, drawn by the data set's own rules,
explains it best, so a round blob is a circle whatever was asked. With two judges or more, the
strict reading (right by every judge) and how often they agree; prompt accuracy and shape are
also given for small and large shapes apart (evaluation/judges.py scores the judges themselves
on blurred and blob images). A class-conditional model of the same data (class = shape) is asked for the
shape of each test image and judged on shape alone, for the rows beside it. Also CLIPScore (Hessel et al. 2021) of each sample against its prompt,
and, with --negative, the same with a negative prompt: the prompt itself with its colour
changed to the next of the palette (steer away from "a small *green* circle ..." when asking for
"a small red circle ..."; a bare word as a negative prompt is a caption the text encoder never
saw, and measured worse).
"""

import argparse
import json
import time

import torch

from .. import pipelines
from ..cli import GUIDANCE, SEED, Parser, at_least, between, number, run, writable_folder
from ..data import load_dataset
from ..diffusion import SAMPLERS, SamplerConfig
from .ink import read_ink
from .metrics import clip_score, frechet_distance_of, precision_recall, zero_shot_attributes


@torch.no_grad()
def read_attributes(clip, data, images: torch.Tensor) -> torch.Tensor:
    """The CLIP's zero-shot reading (N, A) of images in [−1, 1]."""
    captions, facts = data.captioning.every_combination()
    T = torch.cat([clip.encode_text(part) for part in _chunks(captions, 500)]).cpu()
    I = torch.cat([clip.encode_image(images[i:i + 250]).cpu() for i in range(0, len(images), 250)])
    return zero_shot_attributes(I, T, facts)


def _chunks(items: list, n: int):
    return [items[i:i + n] for i in range(0, len(items), n)]


def accuracy_by_attribute(predicted: torch.Tensor, truth: torch.Tensor, names: list[str]) -> dict:
    out = {name: (predicted[:, a] == truth[:, a]).float().mean().item() for a, name in enumerate(names)}
    out["all"] = (predicted == truth).all(1).float().mean().item()
    return out


def confusion(predicted: torch.Tensor, truth: torch.Tensor, k: int) -> list[list[int]]:
    """(k, k) counts: row = the value asked for, column = the value the judge read."""
    return torch.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).tolist()


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.evaluation.prompts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a text-conditional diffusion checkpoint (train_ldm.py --condition "
                                                      "text), or a class-conditional one (class = shape: judged on shape)")
    parser.add_argument("--clip", help="a judge: a CLIP from train_clip.py on the same data (zero-shot reading; "
                                        "also gives CLIPScore)")
    parser.add_argument("--judge", help="a judge: an attribute classifier from train_vit.py --attributes")
    parser.add_argument("-n", type=number(int, between(1, 10_000)), default=100,
                        help="prompts of seen and of held-out combinations, each (default: 100)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="the sampler (default: ddim; dpm++ in 20 "
                                                                              "steps reads within 2 points, 3x faster)")
    parser.add_argument("--steps", type=number(int, at_least(1)), default=50, help="sampler steps (default: 50)")
    parser.add_argument("--guidance", type=number(float, GUIDANCE), default=3.0,
                        help="classifier-free guidance scale (default: 3)")
    parser.add_argument("--negative", action="store_true", help="also sample with a negative prompt: another colour")
    parser.add_argument("--seed", type=number(int, SEED), default=0, help="seed of the prompts and the noise (default: 0)")
    parser.add_argument("--out", default="runs/eval-prompts", help="folder for prompts.json")
    args = parser.parse_args(argv)
    out = writable_folder(args.out)                         # before the work, not after it
    pipe = pipelines.load(args.ckpt, kind="ddpm")
    text = pipe.tokenizer is not None
    if not text and not pipe.num_classes:
        parser.error(f"{args.ckpt} is unconditional: nothing to ask of it")
    if not text and args.negative:
        parser.error("--negative: a negative prompt needs a text-conditional model")
    data = load_dataset(pipe.data["dataset"], "test")
    if data.captioning is None or len(data.captioning.attributes) < 2:
        parser.error(f"{args.ckpt} was trained on {pipe.data['dataset']}, which has no named attributes to judge")
    judges = {}                                                           # name -> images (N, C, H, W) -> (N, A)
    if pipe.data["dataset"].startswith("captioned-shapes"):               # the ink reader (ink.py): nothing learned
        judges["ink"] = read_ink
    clip = pipelines.load(args.clip, kind="clip") if args.clip else None
    if clip is not None:
        judges["clip"] = lambda x: read_attributes(clip, data, x)
    if args.judge:
        classifier = pipelines.load(args.judge, kind="vit")
        if classifier.attributes != {k: list(v) for k, v in data.captioning.attributes.items()}:
            parser.error(f"--judge {args.judge}: not an attribute classifier of {pipe.data['dataset']} "
                         "(train_vit.py --attributes makes one)")
        judges["classifier"] = classifier.read_attributes
    if not judges:
        parser.error("give a judge: --clip or --judge (the ink reader reads captioned-shapes alone)")
    names = list(data.captioning.attributes)
    asked = list(range(len(names))) if text else [0]        # what the condition names: every attribute, or the class
    held = torch.from_numpy(data.captioning.held_out(data.facts.numpy()))
    g = torch.Generator().manual_seed(args.seed)
    pick = lambda rows: rows.nonzero().flatten()[torch.randperm(int(rows.sum()), generator=g)[:args.n]]
    report = {"args": vars(args)}
    reals, samples = [], {}                                 # for the distances in the judge's features
    for split, index in (("seen", pick(~held)), ("held_out", pick(held))):
        prompts, truth = data.captions(index, 0), data.facts[index]
        runs = [("plain", None)]
        if args.negative:      # the prompt with the next colour of the palette
            other = truth.clone()
            other[:, 1] = (other[:, 1] + 1) % len(data.captioning.attributes["colour"])
            runs.append(("negative", data.captioning.describe(other, 0)))
        real = data.batch(index)[0]
        verdicts = {}                 # judge -> (N,) bool: every attribute asked read back, for the agreement
        def judged(read, x, j):       # accuracy per attribute, by object size, and how the first (shape) was misread
            predicted = read(x)
            out = accuracy_by_attribute(predicted[:, asked], truth[:, asked], [names[a] for a in asked])
            out[f"{names[0]}_confusion"] = confusion(predicted[:, 0], truth[:, 0], len(data.captioning.attributes[names[0]]))
            verdicts[j] = (predicted[:, asked] == truth[:, asked]).all(1)
            if "size" in names and text:
                small = truth[:, names.index("size")] == 0
                for part, rows in (("small", small), ("large", ~small)):
                    out[f"all_{part}"] = verdicts[j][rows].float().mean().item()
                    out[f"{names[0]}_{part}"] = (predicted[rows, 0] == truth[rows, 0]).float().mean().item()
            return out

        def agreement(row: dict) -> None:   # with two judges or more: the strict reading and how often they agree
            if len(verdicts) > 1:
                v = torch.stack(list(verdicts.values()))
                row["all_judges"] = v.all(0).float().mean().item()
                row["judges_agree"] = (v == v[0]).all(0).float().mean().item()
        row = {"n": len(index), "judge_on_real": {j: judged(read, real, j) for j, read in judges.items()}}
        reals.append(real)
        for name, negative in runs:
            torch.manual_seed(args.seed)
            generator = torch.Generator().manual_seed(args.seed)
            denoiser = pipe.denoiser(args.guidance, pipe.prompts(negative) if negative else None)
            start = time.perf_counter()
            x = pipe.to_pixels(SamplerConfig(args.sampler, args.steps, clip_x0=pipe.clip_x0).sample(
                denoiser, pipe.noise(len(prompts), generator), generator=generator,
                cond=pipe.prompts(prompts) if text else pipe.condition(truth[:, 0]),
                progress=False)).cpu()
            seconds = time.perf_counter() - start
            row[name] = {j: judged(read, x, j) for j, read in judges.items()}
            agreement(row[name])
            samples.setdefault(name, []).append(x)
            row[name]["images_per_s"] = len(x) / seconds
            if clip is not None and text:
                row[name]["CLIPScore"] = clip_score(clip.encode_image(x).cpu(), clip.encode_text(prompts).cpu())
            for j in judges:
                print(f"{split:9s} {name:8s} judged by {j:10s}: prompt accuracy {row[name][j]['all']:.1%} ("
                      + ", ".join(f"{names[a]} {row[name][j][names[a]]:.0%}" for a in asked)
                      + (f"; small shapes {row[name][j]['all_small']:.0%} (shape {row[name][j]['shape_small']:.0%}), "
                         f"large {row[name][j]['all_large']:.0%} (shape {row[name][j]['shape_large']:.0%})"
                         if "all_small" in row[name][j] else "")
                      + "); the judge on the real images: "
                      f"{row['judge_on_real'][j]['all']:.1%}")
            if "all_judges" in row[name]:
                print(f"{split:9s} {name:8s} right by every judge: {row[name]['all_judges']:.1%} (the strict "
                      f"reading); the judges agree on {row[name]['judges_agree']:.1%} of the samples")
            if "classifier" in judges:
                print(f"{split:9s} {name:8s} {names[0]} asked (rows) and read by the classifier (columns), "
                      f"{', '.join(data.captioning.attributes[names[0]])}: {row[name]['classifier'][f'{names[0]}_confusion']}")
            print(f"{split:9s} {name:8s} {row[name]['images_per_s']:.1f} images/s"
                  + (f", CLIPScore {row[name]['CLIPScore']:.3f}" if "CLIPScore" in row[name] else ""))
        report[split] = row
    if args.judge:          # quality and coverage over both splits' samples, in the attribute judge's features
        feats = lambda x: torch.cat([classifier.network.features(x[i:i + 250].to(classifier.device)).cpu()
                                     for i in range(0, len(x), 250)])
        with torch.no_grad():
            real = feats(torch.cat(reals))
            for name, xs in samples.items():
                fake = feats(torch.cat(xs))
                report[f"features_{name}"] = {"FD": frechet_distance_of(real, fake),
                                              **dict(zip(("precision", "recall"), precision_recall(real, fake)))}
                print(f"{name:8s} against the {len(real)} real images, in the judge's features: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in report[f"features_{name}"].items()))
    (out / "prompts.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'prompts.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
