"""Where does the grain in diffusion samples come from? Residual noise, measured.

    python -m minigen.evaluation.grain --ckpt runs/ddpm/last.pt [--ckpt runs/other/last.pt ...]

A sample is *grainy* when it has more speckles (metrics.speckles: pixels of a flat region that
stand out from their 3×3 median) than 99% of real training images. For each checkpoint this
prints three tables, with the same seeds for every checkpoint:

1. The share of grainy samples under sampling settings that each remove one suspect: guidance
   (w = 1), guidance at low noise (w only at σ > --sigma-low), the clipping of x̂_0.
2. Along the default reverse process (DDIM, w = --guidance): the share of samples whose current
   x̂_0 is grainy, per step. Grain that appears only in the last steps comes from the low-noise
   end of the chain; grain already in x̂_0 at high noise comes from the trajectory.
3. On real test images noised to x_t: the mean squared error of the network's x̂_0 (and of ε̂)
   per noise level, and the share of grainy one-step denoisings x̂_0(x_t). A network that has
   learned too little about low noise (e.g. down-weighted there by min-SNR-γ) shows it here,
   with no sampler involved.
"""

import argparse
import sys

import torch

from .. import pipelines
from ..cli import GUIDANCE, SEED, Parser, at_least, between, non_negative, number, run
from ..device import pick_device
from ..data import train_and_test
from ..diffusion import SamplerConfig
from ..errors import MinigenError
from .metrics import grainy_fraction, speckle_limit, speckles

NOISE_LEVELS = (9, 19, 49, 99, 199, 399, 699)     # timesteps of table 3 (T = 1000 chains)


def sampling_table(pipe, labels, noise, limit, args):
    """(setting, share grainy, mean speckles) for each setting, all from the same x_T; and, along
    the first (default) setting's reverse process, (t, σ_t, share of samples whose x̂_0 is grainy)."""
    w, steps = args.guidance, args.steps
    settings = [
        (f"DDIM {steps}, w = {w:g} (default)", SamplerConfig("ddim", steps), {"guidance": w}),
        (f"DDIM {steps}, w = 1 (no guidance)", SamplerConfig("ddim", steps), {"guidance": 1.0}),
        (f"DDIM {steps}, w = {w:g} only at σ > {args.sigma_low:g}", SamplerConfig("ddim", steps),
         {"guidance": w, "sigma_interval": (args.sigma_low, float("inf"))}),
        (f"DDIM {steps}, w = {w:g}, x̂_0 not clipped", SamplerConfig("ddim", steps, clip_x0=False), {"guidance": w}),
    ]
    rows, chain = [], []
    for name, sampler, denoise in settings:
        starts = iter(sampler.timesteps(pipe.diffusion))    # x̂_0 of each step is predicted at its start t

        def record(t_prev, x_t, x0):
            t = next(starts)
            chain.append((t, pipe.diffusion.sigma[t].item(), grainy_fraction(x0.cpu(), limit)))

        x = sampler.sample(pipe.denoiser(**denoise), noise, cond=pipe.condition(labels), progress=False,
                           callback=record if not rows else None)
        s = speckles(x.cpu())
        rows.append((name, (s > limit).double().mean().item(), s.double().mean().item()))
        print(f"  {name:40s} grainy {rows[-1][1]:6.1%}   speckles/image {rows[-1][2]:6.2f}", flush=True)
    return rows, chain


@torch.no_grad()
def denoising_table(pipe, test, limit, args) -> list[tuple[int, float, float, float, float]]:
    """(t, σ_t, MSE of x̂_0, MSE of ε̂, ‖ε̂‖/‖ε‖, share grainy of x̂_0(x_t)) on real test images,
    unguided. ‖ε̂‖/‖ε‖ below 1: the network takes out less noise than there is."""
    g = torch.Generator().manual_seed(args.seed)
    x0, y = test.batch(torch.arange(min(args.n, len(test))))
    x0 = x0.to(pipe.device)
    denoiser = pipe.denoiser(1.0)
    rows = []
    for t in (t for t in NOISE_LEVELS if t < pipe.diffusion.T):
        eps = torch.randn(x0.shape, generator=g).to(pipe.device)
        bt = pipe.diffusion.batch_t(t, x0)
        d = denoiser(pipe.diffusion.q_sample(x0, bt, eps), t, **pipe.condition(y))
        rows.append((t, pipe.diffusion.sigma[t].item(), (d.x0 - x0).pow(2).mean().item(), (d.eps - eps).pow(2).mean().item(),
                     (d.eps.norm() / eps.norm()).item(), grainy_fraction(d.x0.clamp(-1, 1).cpu(), limit)))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="diffusion checkpoint (repeatable)")
    p.add_argument("-n", type=number(int, between(10, 100_000)), default=100, help="samples per setting (default: 100)")
    p.add_argument("--steps", type=number(int, at_least(1)), default=50, help="DDIM steps (default: 50)")
    p.add_argument("--guidance", type=number(float, GUIDANCE), default=3.0, help="guidance scale w (default: 3)")
    p.add_argument("--sigma-low", type=number(float, non_negative), default=0.28,
                   help="σ below which the low-noise row does not guide (default: 0.28)")
    p.add_argument("--seed", type=number(int, SEED), default=0, help="seed of x_T and of the noise in table 3 (default: 0)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    return p


@torch.no_grad()
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device, _ = pick_device(args.device)
    for path in args.ckpt:
        pipe = pipelines.load(path, device, kind="ddpm")
        data = pipe.data
        if not data.get("dataset"):
            raise MinigenError(f"{path}: the checkpoint does not say which data it was trained on")
        train, test = train_and_test(data["dataset"], root=data["data_root"], size=data["image_size"],
                                     channels=data["channels"])
        real = train.batch(torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:2000])[0]
        limit = speckle_limit(real)
        K = max(pipe.num_classes, 1)
        labels = torch.arange(args.n) % K
        noise = pipe.noise(args.n, torch.Generator(device=pipe.device).manual_seed(args.seed))
        print(f"\n{path} (step {pipe.step}, {data['dataset']}): grainy = more than {limit:g} speckles "
              f"(99% of real training images have at most that many)")
        print("1. sampling settings")
        sampling, chain = sampling_table(pipe, labels, noise, limit, args)
        print("2. the default reverse process: share of samples whose x̂_0 is grainy, per step")
        shown = sorted(set(range(0, len(chain), max(1, len(chain) // 10))) | {len(chain) - 2, len(chain) - 1} - {-1})
        print("   " + "  ".join(f"t={chain[i][0]} (σ {chain[i][1]:.2g}): {chain[i][2]:.0%}" for i in shown))
        print("3. real test images noised to x_t, denoised in one network call (no guidance)")
        for t, sigma, mse_x0, mse_eps, ratio, share in denoising_table(pipe, test, limit, args):
            print(f"   t = {t:3d}  σ = {sigma:6.3f}   MSE(x̂_0) {mse_x0:.5f}   MSE(ε̂) {mse_eps:.4f}   "
                  f"‖ε̂‖/‖ε‖ {ratio:.3f}   grainy {share:6.1%}")
        print("\n| setting | grainy | speckles/image |\n|---|---|---|")
        for name, share, mean in sampling:
            print(f"| {name} | {share:.1%} | {mean:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
