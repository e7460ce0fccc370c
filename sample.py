"""Draw samples from a trained checkpoint (DDPM or GAN): the model is rebuilt from the config in it.

    python sample.py --ckpt runs/ddpm/last.pt                       # a grid, one row per class
    python sample.py --ckpt runs/ddpm/last.pt --class 7 -n 16       # sixteen 7s
    python sample.py --ckpt runs/ddpm/last.pt --sampler ddpm --steps 1000 --guidance 1
    python sample.py --ckpt runs/ddpm/last.pt --class 8 --negative-class 3 --guidance 4
    python sample.py --ckpt runs/ddpm/last.pt --strip --gif         # the reverse process, as a strip and a GIF
    python sample.py --ckpt runs/gan/last.pt --min-d-prob 0.7       # GAN samples D scores as real
    python sample.py --ckpt runs/gan/last.pt --interpolate 10       # a walk between two latents (also DDIM)

Same --seed, same images. A missing, corrupt, code-carrying or wrong-kind checkpoint is
reported in one line, with exit status 2.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from minigen.checkpoint import load_checkpoint
from minigen.cli import run
from minigen.dcgan import DCGANConfig, Discriminator, Generator
from minigen.diffusion import SPACINGS, Diffusion
from minigen.errors import CheckpointError, MinigenError
from minigen.images import save_gif, save_grid, save_strip
from minigen.latent import slerp
from minigen.runtime import pick_device
from minigen.schedules import make_betas
from minigen.unet import UNet, UNetConfig

KINDS = ("ddpm", "gan")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train_ddpm.py (e.g. runs/ddpm/last.pt)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim", help="ancestral DDPM or DDIM (default: ddim)")
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: 50 for ddim, T for ddpm)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like (default: 0)")
    p.add_argument("--spacing", choices=SPACINGS, default="trailing", help="which timesteps to visit (default: trailing)")
    p.add_argument("--variance", choices=["small", "large"], default="small",
                   help="DDPM variance: posterior β̃ (small) or β (large) (default: small)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale w; 1 = none (default: 3)")
    p.add_argument("--class", dest="class_", type=int, default=None,
                   help="generate this class only (default: a row per class)")
    p.add_argument("--negative-class", type=int, default=None,
                   help="steer away from this class (a 'negative prompt': replaces the unconditional pass)")
    p.add_argument("-n", type=int, default=None, help="number of images (default: 10 per class, or 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same images (default: 0)")
    p.add_argument("--out", default="samples.png", help="output grid (default: samples.png)")
    p.add_argument("--strip", action="store_true", help="also write OUT_strip.png: the reverse process of the first image")
    p.add_argument("--gif", action="store_true", help="also write OUT.gif: the whole grid denoising")
    p.add_argument("--no-clip", action="store_true", help="do not clip the predicted x_0 to [-1, 1]")
    p.add_argument("--dynamic-threshold", type=float, default=None, metavar="P",
                   help="dynamic thresholding of x_0 at percentile P, e.g. 0.995 (Saharia et al. 2022)")
    p.add_argument("--min-d-prob", type=float, default=None, metavar="P",
                   help="GAN only: keep samples the discriminator scores as real with probability >= P "
                        "(e.g. 0.7), drawing more until there are enough")
    p.add_argument("--interpolate", type=int, default=None, metavar="N",
                   help="also write OUT_interp.png and .gif: N steps of a spherical walk between two latents "
                        "(GAN z, or DDIM x_T with eta 0)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (the per-step call, not the loop)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_ddpm(state: dict, device: torch.device):
    """The EMA U-Net and the Diffusion of a train_ddpm.py checkpoint."""
    try:
        model = UNet(UNetConfig(**state["config"]))
        model.load_state_dict(state["ema"]["model"] if "ema" in state else state["model"])
        train = state["extra"]["train"]
        diffusion = Diffusion(make_betas(train["schedule"], train["T"]), prediction=train["prediction"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this minigen's U-Net ({str(e).splitlines()[0][:150]})") from None
    return model.to(device).eval(), diffusion, state["extra"].get("classes", [])


def load_gan(state: dict, device: torch.device):
    """The EMA generator and the discriminator of a train_gan.py checkpoint."""
    try:
        config = DCGANConfig(**state["config"])
        G, D = Generator(config), Discriminator(config)
        G.load_state_dict(state["ema"]["model"] if "ema" in state else state["model"])
        D.load_state_dict(state["others"]["discriminator"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this minigen's DCGAN ({str(e).splitlines()[0][:150]})") from None
    return G.to(device).eval(), D.to(device).eval(), state["extra"].get("classes", [])


@torch.no_grad()
def gan_samples(G, D, labels, n, generator, device, min_d_prob):
    """n samples of G (EMA); with min_d_prob, redraw each slot until D's probability of "real"
    reaches it (at most 50 rounds). Returns images and the number of candidates drawn."""
    z_dim, K = G.config.z_dim, G.config.num_classes
    y = labels.to(device) if labels is not None else None
    x = G(torch.randn(n, z_dim, generator=generator, device=device), y)
    drawn = n
    if min_d_prob is None:
        return x, drawn
    keep = torch.sigmoid(D(x, y)) >= min_d_prob
    per_slot = 32                                 # candidates drawn at once for each slot still empty
    for _ in range(50):
        missing = (~keep).nonzero().flatten()
        if len(missing) == 0:
            break
        y_try = y[missing].repeat(per_slot) if K else None                     # (per_slot·m,)
        candidates = G(torch.randn(per_slot * len(missing), z_dim, generator=generator, device=device), y_try)
        score = torch.sigmoid(D(candidates, y_try)).reshape(per_slot, len(missing))
        best = score.argmax(0)                                                 # (m,) the best try per slot
        accepted = score[best, torch.arange(len(missing))] >= min_d_prob
        chosen = candidates.reshape(per_slot, len(missing), *x.shape[1:])[best, torch.arange(len(missing))]
        x[missing[accepted]] = chosen[accepted]
        keep[missing[accepted]] = True
        drawn += per_slot * len(missing)
    if not keep.all():
        raise MinigenError(f"--min-d-prob {min_d_prob}: only {int(keep.sum())} of {n} samples reached it after "
                           f"{drawn} draws; ask for a lower threshold")
    return x, drawn


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device, reason = pick_device(args.device)
    print(f"device: {reason}")
    state = load_checkpoint(args.ckpt)
    if state["kind"] not in KINDS:
        raise CheckpointError(f"{args.ckpt}: a {state['kind']!r} checkpoint; sample.py reads {', '.join(KINDS)}")
    if state["kind"] == "gan":
        model, D, classes = load_gan(state, device)
        C, H, W, K = model.config.image_channels, model.config.image_size, model.config.image_size, model.config.num_classes
        print(f"model: DCGAN at step {state['step']}, {C}x{H}x{W}, {len(classes) if K else 'no'} classes")
    else:
        if args.min_d_prob is not None:
            raise MinigenError("--min-d-prob needs a GAN checkpoint (a diffusion model has no discriminator)")
        model, diffusion, classes = load_ddpm(state, device)
        C, (H, W), K = model.config.image_channels, model.config.image_size, model.config.num_classes
        print(f"model: DDPM at step {state['step']}, {C}x{H}x{W}, {len(classes) if K else 'no'} classes, "
              f"prediction {diffusion.prediction}, T = {diffusion.T}")

    # ---- labels: a row per class, or one class -------------------------------------------
    for name, value in (("--class", args.class_), ("--negative-class", args.negative_class)):
        if value is not None and not (0 <= value < K):
            raise MinigenError(f"{name} {value}: this model has " + (f"classes 0..{K - 1}" if K else "no classes"))
    if K and args.class_ is None:
        n = args.n or 10 * K
        labels = torch.arange(n) * K // n                     # rows of equal length, class by class
    elif K:
        n = args.n or 16
        labels = torch.full((n,), args.class_)
    else:
        n, labels = args.n or 64, None
    if n < 1:
        raise MinigenError(f"-n {n}: ask for at least one image")
    if state["kind"] == "gan" and args.negative_class is not None:
        raise MinigenError("--negative-class steers classifier-free guidance; a GAN checkpoint has none")
    negative = torch.full((n,), args.negative_class, device=device) if args.negative_class is not None else None

    # ---- sample -----------------------------------------------------------------------------
    net = torch.compile(model) if args.compile else model
    generator = torch.Generator(device=device).manual_seed(args.seed)
    want_frames = args.strip or args.gif
    start = time.perf_counter()
    if state["kind"] == "gan":
        if want_frames:
            raise MinigenError("--strip and --gif show a diffusion model's reverse process; a GAN has none "
                               "(try --interpolate)")
        x, drawn = gan_samples(net, D, labels, n, generator, device, args.min_d_prob)
        method = "GAN" + (f", kept {n} of {drawn} draws with D(x) >= {args.min_d_prob}" if args.min_d_prob is not None else "")
        inter = None
    else:
        steps = args.steps or (50 if args.sampler == "ddim" else diffusion.T)
        if not 1 <= steps <= diffusion.T:
            raise MinigenError(f"--steps {steps}: must be between 1 and T = {diffusion.T}")
        if not 0 <= args.eta <= 1:
            raise MinigenError(f"--eta {args.eta}: must be in [0, 1]")

        def ddpm_sample(shape, y, x_T=None, intermediates=False, sampler=args.sampler, eta=args.eta):
            return diffusion.sample(net, shape, sampler=sampler, steps=steps, eta=eta, spacing=args.spacing,
                                    x_T=x_T, generator=generator, clip_x0=not args.no_clip,
                                    dynamic_threshold=args.dynamic_threshold, variance=args.variance,
                                    y=y.to(device) if y is not None else None,
                                    guidance=args.guidance if K else 1.0, null_label=K if K else None,
                                    negative_y=negative, device=device, return_intermediates=intermediates,
                                    progress=not args.no_progress)

        result = ddpm_sample((n, C, H, W), labels, intermediates=want_frames)
        x, inter = result if want_frames else (result, None)
        method = f"{args.sampler} {steps} steps"
    seconds = time.perf_counter() - start

    # ---- pictures -----------------------------------------------------------------------------
    out = Path(args.out)
    per_row = 10 if K and args.class_ is None else None
    row_labels = None
    if K and args.class_ is None and n % K == 0:
        per_row = n // K
        row_labels = [str(c)[:10] for c in classes] if classes else [str(k) for k in range(K)]
    print(f"wrote {save_grid(x, out, nrow=per_row, row_labels=row_labels)}")
    if args.strip:
        picks = torch.linspace(0, len(inter["t"]) - 1, 10).round().long()
        path = save_strip(inter["x_t"][picks, 0], out.with_name(out.stem + "_strip.png"),
                          captions=[f"t={inter['t'][i]}" for i in picks.tolist()])
        print(f"wrote {path}")
    if args.gif:
        picks = torch.linspace(0, len(inter["t"]) - 1, min(40, len(inter["t"]))).round().long()
        path = save_gif([inter["x_t"][i] for i in picks.tolist()], out.with_suffix(".gif"))
        print(f"wrote {path}")
    print(f"{method}: {n} images in {seconds:.2f}s ({n / seconds:.1f} images/s, {seconds / n:.4f} s/image)")

    # ---- a walk between two latents -----------------------------------------------------------
    if args.interpolate:
        if args.interpolate < 2:
            raise MinigenError(f"--interpolate {args.interpolate}: ask for at least 2 frames")
        frames = args.interpolate
        label = labels[:1].expand(frames) if labels is not None else None
        fractions = torch.linspace(0, 1, frames)
        if state["kind"] == "gan":
            ends = torch.randn(2, model.config.z_dim, generator=generator, device=device)
            with torch.no_grad():
                walk = net(slerp(ends[0], ends[1], fractions).to(device), label.to(device) if K else None)
        else:
            ends = torch.randn(2, C, H, W, generator=generator, device=device)
            walk = ddpm_sample((frames, C, H, W), label, x_T=slerp(ends[0], ends[1], fractions).to(device),
                               sampler="ddim", eta=0.0)
        strip = save_strip(walk, out.with_name(out.stem + "_interp.png"),
                           captions=[f"{s:.2f}" for s in fractions.tolist()])
        gif = save_gif(list(walk) + list(walk.flip(0)), out.with_name(out.stem + "_interp.gif"), duration_ms=120)
        print(f"wrote {strip} and {gif} (spherical interpolation between two latents)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
