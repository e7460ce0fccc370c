"""`captioned-shapes`: shapes whose every attribute has a name, and captions made from those names.

Each 32x32 RGB image is drawn from five attributes, one word (or two) each:

    shape       circle, square, triangle, cross          (shapes.py's signed distances)
    colour      red, green, blue, yellow, purple, orange (a named palette, a little jitter)
    size        small, large
    position    top left, top right, bottom left, bottom right, centre
    background  black, gray, white                       (flat, so no colour word is ambiguous)

and every caption names all five, in one of several phrasings:

    "a small red triangle at the top left on black"
    "red triangle, small, top left, on black"
    "a triangle in red, small, at the top left, on a black background"
    "small red triangle on black at the top left"

so the words fully determine what a picture must show, and a judge can check each one.

Compositional generalisation: the (shape, colour) pairs in HELD_OUT (every green triangle, ...)
are never drawn into the training split; the test split draws all 24 pairs, so a model can be
measured on combinations it has seen and on ones it has only seen the parts of. Each shape
and each colour still appears in training (with other partners).

The data set's labels are the five attribute indices (N, 5); the class of an image (for
class-conditional training and the judge) is its shape, column 0.
"""

import math

import numpy as np
import torch

from .shapes import CLASSES as SHAPES
from .shapes import draw_ink

SIZE = 32
PALETTE = {"red": (0.90, 0.12, 0.12), "green": (0.10, 0.72, 0.20), "blue": (0.12, 0.28, 0.95),
           "yellow": (0.96, 0.86, 0.10), "purple": (0.58, 0.18, 0.80), "orange": (1.00, 0.52, 0.05)}
BACKGROUNDS = {"black": (0.06, 0.06, 0.06), "gray": (0.50, 0.50, 0.50), "white": (0.94, 0.94, 0.94)}
SIZES = {"small": (4.0, 5.5), "large": (7.5, 9.5)}                      # radius range in pixels
POSITIONS = {"top left": (9, 9), "top right": (23, 9), "bottom left": (9, 23), "bottom right": (23, 23),
             "centre": (16, 16)}                                          # (x, y) of the centre, ±1.5 px
ATTRIBUTES = {"shape": SHAPES, "colour": list(PALETTE), "size": list(SIZES), "position": list(POSITIONS),
              "background": list(BACKGROUNDS)}
HELD_OUT = [("triangle", "green"), ("circle", "blue"), ("square", "red"), ("cross", "yellow")]


def at(position: str) -> str:
    return "in the centre" if position == "centre" else f"at the {position}"


# Every phrasing names all five attributes: a caption is a full description.
PHRASINGS = [
    lambda a: f"a {a['size']} {a['colour']} {a['shape']} {at(a['position'])} on {a['background']}",
    lambda a: f"{a['colour']} {a['shape']}, {a['size']}, {a['position']}, on {a['background']}",
    lambda a: f"a {a['shape']} in {a['colour']}, {a['size']}, {at(a['position'])}, on a {a['background']} background",
    lambda a: f"{a['size']} {a['colour']} {a['shape']} on {a['background']} {at(a['position'])}",
]


def named(attributes) -> dict:
    """One image's attribute indices (5,) -> {"shape": "triangle", "colour": "red", ...}."""
    return {key: values[int(i)] for (key, values), i in zip(ATTRIBUTES.items(), attributes)}


def caption(attributes, phrasing: int = 0) -> str:
    """The caption of one image's attributes in phrasing `phrasing` (a pure function of both)."""
    return PHRASINGS[phrasing % len(PHRASINGS)](named(attributes))


def is_held_out(attributes: np.ndarray) -> np.ndarray:
    """(N, 5) attribute indices -> (N,) bool: the (shape, colour) pair is one of HELD_OUT."""
    pairs = {(SHAPES.index(s), list(PALETTE).index(c)) for s, c in HELD_OUT}
    return np.array([(int(a[0]), int(a[1])) in pairs for a in attributes], dtype=bool)


def make_captioned_shapes(n: int, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`n` images drawn deterministically from `seed`; the training split never holds a HELD_OUT
    pair (such draws get their colour drawn again). Returns images (n, 3, 32, 32) uint8 and
    attributes (n, 5) int64 in the order of ATTRIBUTES."""
    g = torch.Generator().manual_seed(seed)
    counts = [len(v) for v in ATTRIBUTES.values()]
    attributes = torch.stack([torch.randint(0, k, (n,), generator=g) for k in counts], dim=1)   # (n, 5)
    if split == "train":
        while True:
            held = torch.from_numpy(is_held_out(attributes.numpy()))
            if not held.any():
                break
            attributes[held, 1] = torch.randint(0, counts[1], (int(held.sum()),), generator=g)
    return draw(attributes, g), attributes.numpy().astype(np.int64)


def make_every_combination(n: int, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`captioned-shapes-all`: the same drawing with no combination held out of either split, from
    random streams of its own (seed + 1000, so its images are not captioned-shapes'): training
    images for a judge, which must know every combination it is asked to confirm. (A judge
    trained on captioned-shapes' training split reads shape partly from colour, and calls a
    green triangle anything but a triangle.)"""
    return make_captioned_shapes(n, seed + 1000, split="test")


def draw(attributes: torch.Tensor, g: torch.Generator) -> np.ndarray:
    """Images (n, 3, 32, 32) uint8 of the (n, 5) attribute indices: the radius, the centre's
    jitter, the turn, the colour's jitter and the sensor noise drawn from `g`."""
    n = len(attributes)
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, generator=g)
    shape, colour, size, position, background = attributes.T
    lo_hi = torch.tensor(list(SIZES.values()))[size]                         # (n, 2)
    r = lo_hi[:, :1, None] + (lo_hi[:, 1:, None] - lo_hi[:, :1, None]) * torch.rand(n, 1, 1, generator=g)
    centre = torch.tensor(list(POSITIONS.values()), dtype=torch.float32)[position]   # (n, 2)
    cx = centre[:, 0, None, None] + uniform(-1.5, 1.5)
    cy = centre[:, 1, None, None] + uniform(-1.5, 1.5)
    angle = uniform(0, 2 * math.pi)

    ink = draw_ink(shape, r, cx, cy, angle, SIZE)                          # (n, 1, H, W), shapes.py's drawing

    fg = torch.tensor(list(PALETTE.values()))[colour][:, :, None, None]   # (n, 3, 1, 1)
    fg = (fg + 0.04 * torch.randn(n, 3, 1, 1, generator=g)).clamp(0, 1)   # a little jitter in each named colour
    bg = torch.tensor(list(BACKGROUNDS.values()))[background][:, :, None, None]
    image = torch.lerp(bg.expand(n, 3, SIZE, SIZE), fg.expand(n, 3, SIZE, SIZE), ink)
    image = image + 0.02 * torch.randn(image.shape, generator=g)           # a little sensor noise
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
