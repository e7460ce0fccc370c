"""Noise schedules: the variances β_1..β_T of the forward process q(x_t | x_{t−1}).

    linear   β_t = linspace(1e-4, 0.02, T)                 Ho, Jain & Abbeel 2020, arXiv:2006.11239, §4
    cosine   ᾱ(t) = f(t)/f(0),  f(t) = cos²(((t/T + s)/(1 + s))·π/2),  s = 0.008,
             β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999)              Nichol & Dhariwal 2021, arXiv:2102.09672, Eq. 17
    sigmoid  β_t = sigmoid(linspace(−6, 6, T))·(β_end − β_start) + β_start
                                                           (used by GeoDiff, Xu et al. 2022, arXiv:2203.02923)

Everything is computed in float64: ᾱ_T for the linear schedule is about 4e-5, and its
square root and 1 − ᾱ near t = 0 lose digits in float32.

Indices are 0-based, as in code: β[0] is the paper's β_1. `python -m minigen.diffusion.schedules`
prints ᾱ_t and SNR for each schedule and draws them (docs/schedules.png, in docs/math.md).
"""

import argparse
import math

import torch

NAMES = ("linear", "cosine", "sigmoid")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, rescale: bool = False) -> torch.Tensor:
    """β_t = linspace(β_start, β_end, T). With rescale=True both ends are multiplied by 1000/T
    (improved-diffusion's choice, so that a chain of any length T noises the data as much as
    Ho et al.'s T = 1000); off by default, so T = 512 gives exactly linspace(1e-4, 0.02, 512)."""
    scale = 1000 / T if rescale else 1.0
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: ᾱ follows a squared cosine, so SNR falls more evenly than
    with the linear schedule, which wastes its last steps on almost pure noise."""
    t = torch.arange(T + 1, dtype=torch.float64) / T                       # t/T for t = 0..T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2                    # f(t) = cos²(((t/T + s)/(1 + s))·π/2)
    alpha_bar = f / f[0]                                                   # ᾱ(t) = f(t)/f(0)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)      # β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999)


def sigmoid_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t = sigmoid(linspace(−6, 6, T))·(β_end − β_start) + β_start: flat at both ends."""
    return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start


def make_betas(name: str, T: int, **kwargs) -> torch.Tensor:
    """β schedule `name` ("linear", "cosine", "sigmoid") of length T, float64 (T,)."""
    makers = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}
    if name not in makers:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(NAMES)}")
    if T < 1:
        raise ValueError(f"T must be a positive number of steps, not {T}")
    return makers[name](T, **kwargs)


def alpha_bar_and_snr(betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ᾱ_t = Π_{s≤t} (1 − β_s) and SNR(t) = ᾱ_t / (1 − ᾱ_t)   (Kingma et al. 2021, arXiv:2107.00630)."""
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    return alpha_bar, alpha_bar / (1 - alpha_bar)


def schedule_table(T: int = 1000, names=NAMES, points: int = 9) -> str:
    """A text table of ᾱ_t and log10 SNR at evenly spaced t for each schedule."""
    ts = [round(i * (T - 1) / (points - 1)) for i in range(points)]
    lines = [f"{'t':>6} " + " ".join(f"{n + ' ᾱ':>13} {n + ' log10SNR':>17}" for n in names)]
    tables = {n: alpha_bar_and_snr(make_betas(n, T)) for n in names}
    for t in ts:
        cells = [f"{tables[n][0][t].item():13.4e} {math.log10(tables[n][1][t].item()):17.3f}" for n in names]
        lines.append(f"{t:6d} " + " ".join(cells))
    return "\n".join(lines)


def plot_schedules(path: str, T: int = 1000, names=("linear", "cosine", "sigmoid")):
    """Two panels, ᾱ_t and log10 SNR(t) against t, one line per schedule (the comparison in Nichol & Dhariwal 2021, Fig. 5)."""
    from ..images import line_chart
    series_a, series_s = {}, {}
    for name in names:
        alpha_bar, snr = alpha_bar_and_snr(make_betas(name, T))
        series_a[name] = alpha_bar.tolist()
        series_s[name] = torch.log10(snr).tolist()
    return line_chart([("alpha_bar(t): signal kept", series_a), ("log10 SNR(t) = log10(alpha_bar / (1 - alpha_bar))", series_s)], path, xlabel=f"t (T = {T})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minigen.diffusion.schedules",
                                     description="Print and plot ᾱ_t and SNR for the β schedules.")
    parser.add_argument("--T", type=int, default=1000, help="number of diffusion steps (default: 1000)")
    parser.add_argument("--out", default="schedules.png", help="where to draw the plot (default: schedules.png)")
    args = parser.parse_args(argv)
    print(schedule_table(args.T))
    print(f"wrote {plot_schedules(args.out, args.T)}")


if __name__ == "__main__":
    main()
