"""`shapes`: coloured geometric shapes on varied backgrounds, 32x32 RGB, drawn here (`shapes64`:
the same drawn at 64x64, every length doubled, for models where resolution matters).

The RGB counterpart of `glyphs`, so the colour path of every model runs without a
download. Each image holds one shape of a random size, position, rotation and colour
over a two-colour gradient background with a little pixel noise. Shapes are drawn
from signed distance functions (negative inside, positive outside), evaluated for a
whole batch at once, and antialiased by a sigmoid over about one pixel:
    ink = sigmoid(−d / pixel)
Classes: circle, square, triangle, cross.
"""

import math

import numpy as np
import torch

CLASSES = ["circle", "square", "triangle", "cross"]
SIZE = 32


def _sdf_box(px: torch.Tensor, py: torch.Tensor, half_w, half_h) -> torch.Tensor:
    """Signed distance to an axis-aligned box centred at 0 (Quílez's box formula)."""
    qx, qy = px.abs() - half_w, py.abs() - half_h
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    inside = torch.maximum(qx, qy).clamp_max(0)
    return outside + inside


def _sdf(k: int, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance of every pixel to a shape of class k. px, py: (N, H, W) in the shape's
    own rotated frame; r: (N, 1, 1) the shape's radius."""
    name = CLASSES[k]
    if name == "circle":
        return torch.sqrt(px**2 + py**2) - r
    if name == "square":
        return _sdf_box(px, py, 0.8 * r, 0.8 * r)
    if name == "triangle":
        # Equilateral, circumradius 1.2·r: the max of the three edges' half-plane distances.
        apothem = 0.6 * r
        normals = [(0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5)]  # outward, y down
        return torch.stack([nx * px + ny * py - apothem for nx, ny in normals]).amax(dim=0)
    if name == "cross":
        return torch.minimum(_sdf_box(px, py, r, 0.3 * r), _sdf_box(px, py, 0.3 * r, r))
    raise ValueError(f"no signed distance function for class {name!r}")


def pixel_centres(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """y and x of every pixel's centre, (H, W) each."""
    return torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")


def draw_ink(label: torch.Tensor, r, cx, cy, angle, size: int) -> torch.Tensor:
    """How much of each pixel each image's shape covers, (N, 1, H, W) in [0, 1]: the signed
    distance in the shape's rotated frame, antialiased over about a pixel. label (N,); r, cx, cy,
    angle (N, 1, 1), in pixels and radians."""
    ys, xs = pixel_centres(size)
    dx, dy = xs - cx, ys - cy                                              # (N, H, W)
    px = torch.cos(angle) * dx + torch.sin(angle) * dy                     # rotate into the shape's frame
    py = -torch.sin(angle) * dx + torch.cos(angle) * dy
    d = torch.empty(len(label), size, size)
    for k in range(len(CLASSES)):
        idx = label == k
        d[idx] = _sdf(k, px[idx], py[idx], r[idx])                         # (N, H, W) signed distances
    return torch.sigmoid(-d / 0.5)[:, None]                                # ink = sigmoid(−d / pixel)


def make_shapes(n: int, seed: int, chunk: int = 5000, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` shapes deterministically from `seed`, drawn at size x size (lengths scale
    with size / 32: the same pictures, more pixels; 32 gives the original set bit for bit).

    Returns images (n, 3, size, size) uint8 and labels (n,) int64.
    """
    g = torch.Generator().manual_seed(seed)
    parts = [_draw(min(chunk, n - start), g, size) for start in range(0, n, chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _draw(n: int, g: torch.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    def uniform(*shape, lo=0.0, hi=1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    label = torch.randint(0, len(CLASSES), (n,), generator=g)
    k = size / SIZE                                                        # lengths in pixels of a 32x32 image
    r = uniform(n, 1, 1, lo=5.0 * k, hi=11.0 * k)                          # radius in pixels
    cx, cy = uniform(n, 1, 1, lo=10 * k, hi=22 * k), uniform(n, 1, 1, lo=10 * k, hi=22 * k)
    angle = uniform(n, 1, 1, lo=0, hi=2 * math.pi)

    ink = draw_ink(label, r, cx, cy, angle, size)                           # (N, 1, H, W)
    ys, xs = pixel_centres(size)

    # Background: a linear gradient between two colours along a random direction.
    bg_a, bg_b = uniform(n, 3, 1, 1), uniform(n, 3, 1, 1)
    direction = uniform(n, 1, 1, lo=0, hi=2 * math.pi)
    ramp = ((torch.cos(direction) * xs + torch.sin(direction) * ys) / size + 1) / 2  # (N, H, W) in [0, 1]
    background = torch.lerp(bg_a, bg_b, ramp[:, None])                     # (N, 3, H, W)
    # Foreground: a colour far from the background's mean, so every shape is visible.
    fg = (background.mean(dim=(2, 3), keepdim=True) + uniform(n, 3, 1, 1, lo=0.35, hi=0.65)) % 1.0
    image = torch.lerp(background, fg.expand_as(background), ink)
    image = image + 0.03 * torch.randn(image.shape, generator=g)           # a little sensor noise
    images = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, label.numpy().astype(np.int64)
