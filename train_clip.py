"""Train a tiny CLIP (Radford et al. 2021) from scratch: a ViT and a text Transformer that agree.

    python train_clip.py --contrast shape --patch-size 8 --steps 5000   # built-in captioned shapes: 8 min
                                                          # on 2 CPU cores, 99% of seen shapes read
    python train_clip.py --dataset fashion --out runs/clip-fashion     # captions that name the class
    python train_clip.py --dataset emoji --steps 3000 --out runs/clip-emoji   # every emoji by its name
    python train_clip.py --resume                         # continue runs/clip/last.pt to --steps

Each step takes a batch of images and their captions (each caption in a phrasing drawn at
random: "a small red triangle at the top left on black", "red triangle, small, top left, on
black", ...), embeds both, and pulls every image towards its own caption and away from the
batch's other captions (the symmetric InfoNCE loss, minigen/models/clip.py). The tokenizer is
learned from the training captions first and saved in the checkpoint. With --contrast shape
each batch is made of groups of four images that differ only in their shape, so that the
batch's own negatives teach the one attribute a random batch never isolates.

At the end it reports, on the test split:
    zero-shot accuracy per attribute: each image scored against a caption of every combination
        of attribute values, each attribute read off by the most probable value (metrics.py),
        on combinations seen in training and on the held-out ones (captioned-shapes)
    retrieval recall@1 and @5, image -> text and text -> image, over 1,000 test pairs, or over
        every thing there is where the set lists them (emoji: all 3,655 names), and for the
        held-out images, image -> text (their name never seen with a picture)
and writes OUT/similarity.png (8 test images against their 8 captions) and OUT/report.json.
No --flip: captions name positions, and a mirrored image would contradict its caption.
"""

import dataclasses
import json
import sys
from dataclasses import dataclass
from functools import partial

import torch

from minigen.cli import STEPS, at_least, between, non_negative, positive, run, setting
from minigen.data import DataConfig, batch_indices, train_and_test
from minigen.device import seed_everything
from minigen.errors import MinigenError
from minigen.evaluation.cost import count_parameters
from minigen.evaluation.metrics import retrieval_recall
from minigen.evaluation.prompts import accuracy_by_attribute, read_attributes
from minigen.images import save_grid
from minigen.models.clip import CLIP, PRESETS, info_nce, preset
from minigen.pipelines import CLIPPipeline
from minigen.tokenizer import Tokenizer
from minigen.training.lifecycle import Run, RunConfig
from minigen.training.lr import warmup_cosine


@dataclass
class CLIPTrainConfig(DataConfig, RunConfig):
    dataset: str = setting("captioned-shapes", "data set: its images and their captions")
    preset: str = setting("cpu", "CLIP size (image ViT and text encoder)", choices=PRESETS)
    patch_size: int | None = setting(None, "the image tower's patch size (default: the preset's: 4, tiny 8)",
                                     check=at_least(1))
    stem: str | None = setting(None, "the image tower's stem: patch (a linear map per patch) or conv (Xiao et al. "
                                     "2021) (default: the preset's)", choices=["patch", "conv"])
    steps: int = setting(1500, "optimizer steps", runtime=True, check=STEPS)
    batch_size: int = setting(128, "image-caption pairs per step: each image's negatives are the other captions",
                              check=at_least(2))
    lr: float = setting(1e-3, "peak AdamW learning rate", check=positive)
    warmup: int = setting(100, "linear warm-up steps, then cosine decay to 0", check=non_negative)
    weight_decay: float = setting(0.05, "AdamW weight decay", check=non_negative)
    max_len: int = setting(24, "tokens per caption, [CLS] included (longer captions are cut)", check=between(2, 512))
    contrast: str | None = setting(None, "make each batch of groups of images that differ only in this attribute "
                                         "(e.g. shape: a circle, a square, a triangle and a cross, all else equal), "
                                         "so the batch's negatives teach it; default: random batches")
    hard_negatives: bool = setting(False, "add, for every image, its caption with one attribute changed as one more "
                                          "negative (NegCLIP, Yuksekgonul et al. 2023)")
    ignore_twins: bool = setting(False, "leave out of the loss every pair of batch items whose captions describe the "
                                        "same facts (a twin is no negative; models/clip.py)")
    eval_every: int = setting(500, "zero-shot accuracy on 1,000 test images every N steps (0: only at the end)",
                              runtime=True, check=non_negative)
    out: str = setting("runs/clip", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)


def hard_negatives(data, index: torch.Tensor, generator: torch.Generator) -> list[str]:
    """For each image, a caption of the same facts with one attribute (chosen at random) moved to
    another value, in a random phrasing: "a small red circle ..." -> "a small red *square* ...".
    Never a held-out combination: a caption taught as a negative of everything would match
    nothing at test time (measured: held-out shape accuracy fell from 41% to 5% when allowed)."""
    truth = data.facts[index]                                                   # (B, A)
    facts = truth.clone()
    sizes = torch.tensor([len(v) for v in data.captioning.attributes.values()])
    held_out = data.captioning.held_out or (lambda f: torch.zeros(len(f), dtype=torch.bool).numpy())
    redo = torch.ones(len(facts), dtype=torch.bool)
    while redo.any():                                                           # draw again where held out
        rows = redo.nonzero().flatten()
        a = torch.randint(0, facts.shape[1], (len(rows),), generator=generator)    # which attribute
        shift = 1 + (torch.rand(len(rows), generator=generator) * (sizes[a] - 1)).long()   # 1 .. K_a − 1
        facts[rows] = truth[rows]
        facts[rows, a] = (truth[rows, a] + shift) % sizes[a]
        redo = torch.from_numpy(held_out(facts.numpy()))
    phrasings = torch.randint(0, 12, (len(facts),), generator=generator).tolist()
    return [data.captioning.describe(f[None], p)[0] for f, p in zip(facts, phrasings)]


def contrast_batch(data, anchors: torch.Tensor, attribute: int, generator: torch.Generator) -> torch.Tensor:
    """Each anchor image followed by one training image for every other value of `attribute`
    with all other attributes equal (drawn at random among those), so that nothing but that
    attribute tells a group's captions apart: (len(anchors)·K,) indices, K = the attribute's
    values. A combination the split does not hold (a held-out pair) is replaced by a random image.
    Why: in a random batch of 128 from 720 combinations, an image's negatives almost never share
    its colour, size, position and background, so the loss is met without ever reading shape."""
    facts = data.facts                                                          # (N, A)
    sizes = torch.tensor([len(v) for v in data.captioning.attributes.values()])
    radix = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), sizes[:-1]]), 0)   # mixed-radix place values
    key = facts @ radix                                                         # (N,) one number per combination
    order = key.argsort()
    sorted_key = key[order]
    K = int(sizes[attribute])
    group = [anchors]
    for shift in range(1, K):
        wanted = facts[anchors].clone()
        wanted[:, attribute] = (wanted[:, attribute] + shift) % K
        target = wanted @ radix                                                 # (G,)
        lo = torch.searchsorted(sorted_key, target)
        hi = torch.searchsorted(sorted_key, target, right=True)
        pick = lo + (torch.rand(len(anchors), generator=generator) * (hi - lo)).long()
        fallback = torch.randint(0, len(facts), (len(anchors),), generator=generator)
        group.append(torch.where(hi > lo, order[pick.clamp(max=len(order) - 1)], fallback))
    return torch.stack(group, dim=1).flatten()                                  # (G·K,) anchor, then its partners


@torch.no_grad()
def embed(model, tokenizer, data, index: torch.Tensor, device, phrasing: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length image and caption embeddings of the images at `index`, 250 at a time."""
    images, texts = [], []
    for part in index.split(250):
        images.append(model.encode_image(data.batch(part)[0].to(device)).cpu())
        ids, mask = tokenizer.encode(data.captions(part, phrasing))
        texts.append(model.encode_text(ids.to(device), mask.to(device)).cpu())
    return torch.cat(images), torch.cat(texts)


@torch.no_grad()
def zero_shot(model, tokenizer, data, device, limit: int | None = None) -> dict:
    """Zero-shot accuracy per attribute, on the test images of seen and of held-out combinations."""
    model.eval()
    index = torch.arange(min(limit or len(data), len(data)))
    images = torch.cat([data.batch(part)[0] for part in index.split(1000)])
    predicted = read_attributes(CLIPPipeline(model, tokenizer), data, images)         # (N, A)
    truth = data.facts[index]
    held = (torch.from_numpy(data.captioning.held_out(truth.numpy())) if data.captioning.held_out
            else torch.zeros(len(index), dtype=torch.bool))
    report = {}
    for split, rows in (("seen", ~held), ("held_out", held)):
        if rows.any():
            report[split] = {**accuracy_by_attribute(predicted[rows], truth[rows], list(data.captioning.attributes)),
                             "n": int(rows.sum())}
    return report


def similarity_picture(model, tokenizer, data, device, path, n: int = 8):
    """Row 0: n test images; then one row per caption, a cell per image, as bright as their
    cosine similarity (the diagonal should light up)."""
    index = torch.arange(n)
    I, T = embed(model, tokenizer, data, index, device, phrasing=1)
    sim = T @ I.T                                                                        # (n captions, n images)
    x = data.batch(index)[0]
    C, H, W = x.shape[1:]
    cells = (sim.flatten()[:, None, None, None] * 2 - 1).clamp(-1, 1).expand(-1, C, H, W)   # cos 0 -> black, 1 -> white
    labels = ["image"] + [c[:38] for c in data.captions(index, 1)]
    return save_grid(torch.cat([x, cells]), path, nrow=n, row_labels=labels)


def main(argv=None) -> int:
    run_ = Run.from_command_line(CLIPTrainConfig, "clip", argv, description=__doc__)
    cfg, device, say = run_.cfg, run_.device, run_.say
    if cfg.flip:
        raise MinigenError("--flip: captions name positions (left, right); a mirrored image would contradict its caption")
    seed_everything(cfg.seed)

    # ---- data and the tokenizer -----------------------------------------------------------
    kw = {"root": cfg.data_root, "size": cfg.image_size, "channels": cfg.channels, "seed": cfg.seed,
          "download_missing": cfg.download and run_.main}
    train, test = train_and_test(cfg.dataset, **kw)
    train, test = cfg.select(train), cfg.select(test, limit=False)
    C, H, W = train.shape
    names = list(train.captioning.attributes)
    if cfg.contrast is not None and cfg.contrast not in names:
        raise MinigenError(f"--contrast {cfg.contrast}: {cfg.dataset}'s captions name {', '.join(names)}")
    contrast = names.index(cfg.contrast) if cfg.contrast is not None else None
    if run_.state is not None:
        tokenizer = Tokenizer(**run_.state["extra"]["tokenizer"])
    else:
        tokenizer = Tokenizer.learn(train.every_caption(), cfg.max_len)
    say(f"data: {cfg.dataset}, {len(train)} train / {len(test)} test pairs of {C}x{H}x{W} images and captions, "
        f"e.g. {train.captions(torch.tensor([0]), 0)[0]!r}; vocabulary of {len(tokenizer)} words")

    # ---- model, optimizer -----------------------------------------------------------------
    model_cfg = preset(cfg.preset, C, (H, W), len(tokenizer), cfg.max_len)
    image = {k: v for k, v in (("patch_size", cfg.patch_size), ("stem", cfg.stem)) if v}
    model_cfg = dataclasses.replace(model_cfg, image=dataclasses.replace(model_cfg.image, **image))
    P = model_cfg.image.patch_size
    if H % P or W % P:
        raise MinigenError(f"--preset {cfg.preset} cuts images into {P}x{P} patches, which do not tile {H}x{W} images")
    model = CLIP(model_cfg).to(device)
    say(f"model: CLIP '{cfg.preset}', {count_parameters(model.image) / 1e6:.2f}M image + "
        f"{count_parameters(model.text) / 1e6:.2f}M text parameters, joint space of {model_cfg.embed_dim}")
    say(f"config: {dataclasses.asdict(cfg)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=cfg.warmup, total=cfg.steps))
    extra = {"tokenizer": tokenizer.state(), "data": {"dataset": cfg.dataset, "image_size": cfg.image_size,
                                                      "channels": cfg.channels, "data_root": cfg.data_root},
             "zero_shot": None}
    run_.attach(model, model_cfg, optimizer=optimizer, scheduler=scheduler, extra=extra,
                classes=list(train.classes))
    net = run_.wrap(model)

    # ---- training loop: Radford et al. Figure 3 ----------------------------------------------
    with run_:
        for step in run_.steps():
            model.train()
            phrasings = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)   # a pure function of the step
            if contrast is None:
                index = batch_indices(step, len(train), cfg.batch_size, cfg.seed, run_.rank, run_.world)
            else:
                K = len(train.captioning.attributes[cfg.contrast])
                anchors = batch_indices(step, len(train), cfg.batch_size // K, cfg.seed, run_.rank, run_.world)
                index = contrast_batch(train, anchors, contrast, phrasings)
            x, _ = train.batch(index)
            ids, mask = tokenizer.encode(train.captions(index, generator=phrasings))
            hard = [v.to(device) for v in tokenizer.encode(hard_negatives(train, index, phrasings))] \
                if cfg.hard_negatives else [None, None]
            logits, hard_logits = net(x.to(device), ids.to(device), mask.to(device), *hard)   # (B, B), (B, B)
            twins = None
            if cfg.ignore_twins:                            # pairs with the same facts are no negatives
                facts = train.facts[index].to(device)                               # (B, A)
                twins = (facts[:, None] == facts[None]).all(-1)                     # (B, B)
            loss = info_nce(logits, hard_logits, twins)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run_.check_finite("try a lower --lr", loss=loss)
            if run_.due(cfg.log_every):
                run_.log(loss=loss.item(), temperature=1 / model.logit_scale.exp().item(), lr=scheduler.get_last_lr()[0])
            if run_.main and run_.due(cfg.eval_every, last=False):
                report = zero_shot(model, tokenizer, test, device, limit=1000)
                say(f"step {step + 1}: zero-shot (1,000 test images) " + "; ".join(
                    f"{split}: " + ", ".join(f"{k} {v:.1%}" for k, v in r.items() if k != "n") for split, r in report.items()))
            if run_.due(cfg.ckpt_every, last=False):
                run_.save()                       # OUT/last.pt, as of this step
    if not run_.completed:
        run_.close()
        return run_.exit_code

    # ---- zero-shot accuracy, retrieval, the similarity picture -------------------------------
    if run_.main:
        model.eval()
        report = {"zero_shot": zero_shot(model, tokenizer, test, device)}
        # retrieval among every thing there is where the set lists them (emoji: all 3,655 names),
        # else among the first 1,000 test pairs
        index = torch.arange(len(test) if test.captioning.combinations else min(1000, len(test)))
        I, T = embed(model, tokenizer, test, index, device)
        keys = test.facts[index]
        report["recall"] = {f"@{k}": dict(zip(("image_to_text", "text_to_image"), retrieval_recall(I, T, keys, keys, k)))
                            for k in (1, 5)}
        held = test.captioning.held_out(keys.numpy()) if test.captioning.held_out else None
        if held is not None and held.any():          # held-out images: is their unseen name among the k nearest?
            rows = torch.from_numpy(held)
            for k in (1, 5):
                report["recall"][f"@{k}"]["held_out_image_to_text"] = retrieval_recall(I[rows], T, keys[rows], keys, k)[0]
        extra["zero_shot"] = report
        path = run_.save()
        (run_.out / "report.json").write_text(json.dumps(report, indent=2))
        for split, r in report["zero_shot"].items():
            say(f"zero-shot accuracy, {split} combinations ({r['n']} test images): "
                + ", ".join(f"{k} {v:.1%}" for k, v in r.items() if k != "n"))
        for k, r in report["recall"].items():
            say(f"retrieval recall{k} over {len(index)} test pairs: image->text {r['image_to_text']:.1%}, "
                f"text->image {r['text_to_image']:.1%}"
                + (f"; held-out images->text {r['held_out_image_to_text']:.1%}"
                   if "held_out_image_to_text" in r else ""))
        picture = similarity_picture(model, tokenizer, test, device, run_.out / "similarity.png")
        say(f"wrote {path}, {run_.out / 'report.json'} and {picture}")
    run_.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
