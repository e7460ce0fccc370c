"""`glyphs`: handwriting-ish digits 0-9, 28x28 grayscale, drawn here instead of downloaded.

An MNIST stand-in that needs no network. Each digit starts as a stamp rendered by
Pillow's bundled scalable font (`ImageFont.load_default(size=...)`, Pillow >= 10.1) in
one of several stroke widths, then every sample gets its own random
    rotation, anisotropic scale, shear, translation   (one affine map per sample)
    elastic jitter                                    (Simard et al. 2003: a smooth random
                                                       displacement field, here a coarse
                                                       random grid upsampled bilinearly)
    blur                                              (mixed in by a random amount)
all applied to a whole batch at once (the maps and fields as batched matmuls, then one
`F.grid_sample`), so 70,000 images take seconds. The result is cached under the user cache dir (see `cache_dir`).

Left out: real pen dynamics, alternative glyph shapes (an open 4, a crossed 7): every
"4" is the font's 4, deformed. The variety comes from the deformations alone.
"""


import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

CLASSES = [str(d) for d in range(10)]
CANVAS = 56          # stamps and deformations are worked at 2x, then area-downsampled to 28
SIZE = 28
STROKES = (0, 1, 2)  # extra stroke widths (px at 2x) that thicken the font's outline


def _stamps() -> torch.Tensor:
    """Render each digit in each stroke width, centred by its ink's bounding box.

    Returns (10, len(STROKES), CANVAS, CANVAS) float in [0, 1], ink = 1.
    """
    font = ImageFont.load_default(size=46)
    stamps = torch.zeros(10, len(STROKES), CANVAS, CANVAS)
    for digit in range(10):
        for k, stroke in enumerate(STROKES):
            img = Image.new("L", (CANVAS, CANVAS), 0)
            draw = ImageDraw.Draw(img)
            left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke)
            origin = ((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top)
            draw.text(origin, str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
            stamps[digit, k] = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return stamps


def _interp_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) matrix M with M @ v = v linearly interpolated from n_in to n_out points
    (end points aligned). Interpolating a 2-D grid C is then M @ C @ Mᵀ, one batched matmul."""
    pos = torch.linspace(0, n_in - 1, n_out)
    lo = pos.floor().long().clamp(max=n_in - 2)
    frac = pos - lo
    m = torch.zeros(n_out, n_in)
    m[torch.arange(n_out), lo] = 1 - frac
    m[torch.arange(n_out), lo + 1] = frac
    return m


def _gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) matrix G with G @ v = v blurred by a Gaussian of width sigma (zero padding).
    A separable 2-D blur of an image X is G @ X @ Gᵀ."""
    t = torch.arange(n, dtype=torch.float32)
    g = torch.exp(-(t[:, None] - t[None, :]) ** 2 / (2 * sigma**2))
    return g / g.sum(dim=1, keepdim=True)


def _deform(stamps: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply one random affine map, elastic field and blur to each stamp. (N,1,S,S) -> (N,1,28,28)."""
    n, size = stamps.shape[0], stamps.shape[-1]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    angle = uniform(-0.30, 0.30)            # radians, about ±17°
    scale_x = uniform(1.00, 1.30)           # the map goes output -> input, so > 1 shrinks the digit
    scale_y = scale_x * uniform(0.85, 1.15)
    shear = uniform(-0.35, 0.35)
    shift = torch.stack([uniform(-0.10, 0.10), uniform(-0.10, 0.10)], dim=1)  # (N, 2), in [-1, 1] units

    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    shear_scale = torch.zeros(n, 2, 2)
    shear_scale[:, 0, 0], shear_scale[:, 0, 1], shear_scale[:, 1, 1] = scale_x, shear * scale_x, scale_y
    A = rotation @ shear_scale                                              # (N, 2, 2)

    # Output pixel centres in grid_sample's [-1, 1] coordinates, (x, y) order.
    c = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1        # (S,)
    base = torch.stack(torch.meshgrid(c, c, indexing="xy"), dim=-1)        # (S, S, 2)
    grid = base.reshape(1, size * size, 2) @ A.transpose(1, 2) + shift[:, None, :]  # (N, S·S, 2): p' = A·p + b

    # Elastic jitter: a 5x5 grid of random offsets, interpolated smoothly to (S, S): U·C·Uᵀ.
    U = _interp_matrix(size, 5)                                             # (S, 5)
    coarse = torch.randn(n, 2, 5, 5, generator=g) * uniform(0.0, 0.05)[:, None, None, None]
    field = U @ coarse @ U.T                                                # (N, 2, S, S)
    grid = grid.reshape(n, size, size, 2) + field.permute(0, 2, 3, 1)       # (N, 2, S, S) -> (N, S, S, 2)

    x = F.grid_sample(stamps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = F.avg_pool2d(x, size // SIZE)                                       # (N, 1, S, S) -> (N, 1, 28, 28)
    Gb = _gaussian_matrix(SIZE, 0.7)
    x = torch.lerp(x, Gb @ x @ Gb.T, uniform(0.0, 1.0)[:, None, None, None])  # blur by a random amount
    return (x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)


def make_glyphs(n: int, seed: int, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` digits deterministically from `seed`.

    Returns images (n, 1, 28, 28) uint8 (ink white on black, as MNIST) and labels (n,) int64.
    """
    g = torch.Generator().manual_seed(seed)
    stamps = _stamps()
    labels = torch.randint(0, 10, (n,), generator=g)
    strokes = torch.randint(0, len(STROKES), (n,), generator=g)
    images = np.empty((n, 1, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        batch = stamps[labels[sl], strokes[sl]][:, None]                   # (b, 1, S, S)
        images[sl] = (_deform(batch, g) * 255).round().to(torch.uint8).numpy()
    return images, labels.numpy().astype(np.int64)
