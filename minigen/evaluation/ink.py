"""A judge of captioned shapes with nothing learned: it measures the ink, then asks which shape,
drawn there by the data set's own rules, explains it best.

    facts = read_ink(images)            # (N, 3, 32, 32) in [−1, 1] -> (N, 5) attribute indices

A second judge must be built differently from the first (the attribute ViT learns its reading
from real images, and on a blurry sample extrapolates in ways nobody chose). This one reads:

    background  the median colour of the border pixels: the nearest of BACKGROUNDS
    coverage    how much of each pixel the shape covers. A picture is lerp(bg, fg, ink)
                (captioned.py), so ‖x − bg‖ grows with the ink: c = (‖x − bg‖ − d_noise) /
                (d_full − d_noise), clipped to [0, 1]; d_full is the mean of the five largest
                distances (a fully covered pixel), d_noise three times the border's median one
                (the sensor noise's reach, which would otherwise add ink everywhere)
    colour      the mean of the well-covered pixels (c ≥ 0.8): the nearest of PALETTE
    position    the coverage's centroid: the nearest of POSITIONS
    shape       analysis by synthesis: each of the four shapes, drawn by shapes.draw_ink at that
                centroid, at the radius whose area is the measured A = Σ c (a disc has A = πr², a
                square (1.6r)², the triangle (3√3/4)(1.2r)², the cross 2.04r²) and at every turn
                (5° apart over its symmetry), is compared with the coverage; the shape (and turn)
                of least squared difference is the reading
    size        that shape's radius: small below 6.5 px (SIZES: small 4-5.5, large 7.5-9.5)

So a round blob is read as a circle whatever was asked: the reader credits a square only where
the ink has a square's corners. It is strict on purpose.
"""

import math

import numpy as np
import torch

from ..data.captioned import BACKGROUNDS, PALETTE, POSITIONS, SIZE
from ..data.shapes import CLASSES as SHAPES
from ..data.shapes import draw_ink

# Area of each shape of radius r, over r² (shapes.py's signed distances).
AREA = {"circle": math.pi, "square": 1.6**2, "triangle": 3 * math.sqrt(3) / 4 * 1.2**2, "cross": 2 * 2 * 0.6 - 0.6**2}
SYMMETRY = {"circle": 0.0, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "cross": math.pi / 2}   # turns that repeat
STEP = math.radians(5)
SMALL_BELOW = 6.5                   # px of radius


def _candidates() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (shape, angle) tried: labels (M,) and angles (M,)."""
    labels, angles = [], []
    for k, name in enumerate(SHAPES):
        turns = [0.0] if not SYMMETRY[name] else np.arange(0, SYMMETRY[name], STEP).tolist()
        labels += [k] * len(turns)
        angles += turns
    return torch.tensor(labels), torch.tensor(angles, dtype=torch.float32)


def coverage(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) in [0, 1] -> coverage c (N, H, W) in [0, 1], background (N, 3) and
    shape colour (N, 3)."""
    N = len(x)
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)     # (N, 3, P)
    background = border.median(dim=2).values                                                     # (N, 3)
    d = (x - background[:, :, None, None]).norm(dim=1)                                          # (N, H, W)
    full = d.reshape(N, -1).topk(5, dim=1).values.mean(dim=1)                                   # (N,)
    noise = 3 * (border - background[:, :, None]).norm(dim=1).median(dim=1).values               # the sensor noise's reach
    c = ((d - noise[:, None, None]) / (full - noise).clamp_min(1e-6)[:, None, None]).clamp(0, 1)
    well = (c >= 0.8).float()[:, None]                                                           # (N, 1, H, W)
    colour = (x * well).sum(dim=(2, 3)) / well.sum(dim=(2, 3)).clamp_min(1)
    return c, background, colour


def _nearest(values: torch.Tensor, table: dict) -> torch.Tensor:
    """(N, D) -> (N,) index of the nearest entry of `table` (name -> D numbers)."""
    return torch.cdist(values.float(), torch.tensor(list(table.values()), dtype=torch.float32)).argmin(dim=1)


@torch.no_grad()
def read_ink(images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(N, 3, 32, 32) in [−1, 1] -> (N, 5) attribute indices, in the order of captioned.ATTRIBUTES
    (shape, colour, size, position, background)."""
    if tuple(images.shape[1:]) != (3, SIZE, SIZE):
        raise ValueError(f"the ink reader reads captioned shapes, (N, 3, {SIZE}, {SIZE}); got {tuple(images.shape)}")
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    c, background, colour = coverage(x)
    A = c.sum(dim=(1, 2)).clamp_min(1.0)                                                          # (N,)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    cx, cy = (c * xs).sum(dim=(1, 2)) / A, (c * ys).sum(dim=(1, 2)) / A
    labels, angles = _candidates()
    M = len(labels)
    per_r2 = torch.tensor([AREA[s] for s in SHAPES])[labels]                                    # (M,)
    shape, radius = torch.empty(len(x), dtype=torch.long), torch.empty(len(x))
    for i in range(0, len(x), chunk):
        n = min(chunk, len(x) - i)
        r = (A[i:i + n, None] / per_r2).sqrt()                                                    # (n, M)
        drawn = draw_ink(labels.repeat(n), r.reshape(-1, 1, 1), cx[i:i + n].repeat_interleave(M)[:, None, None],
                         cy[i:i + n].repeat_interleave(M)[:, None, None], angles.repeat(n)[:, None, None], SIZE)
        error = ((drawn[:, 0].reshape(n, M, SIZE, SIZE) - c[i:i + n, None]) ** 2).sum(dim=(2, 3))   # (n, M)
        best = error.argmin(dim=1)
        shape[i:i + n], radius[i:i + n] = labels[best], r[torch.arange(n), best]
    size = (radius >= SMALL_BELOW).long()
    position = _nearest(torch.stack([cx, cy], dim=1), POSITIONS)
    return torch.stack([shape, _nearest(colour, PALETTE), size, position, _nearest(background, BACKGROUNDS)], dim=1)
