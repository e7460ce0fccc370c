"""The built-in data sets: deterministic, labelled, varied, and in the model range."""

import numpy as np
import torch

from minigen.data import cache_dir, load_dataset, to_float, to_uint8
from minigen.data.glyphs import make_glyphs
from minigen.data.shapes import CLASSES as SHAPE_CLASSES
from minigen.data.shapes import make_shapes


def test_glyphs_are_deterministic_for_a_seed_and_differ_across_seeds():
    a, la = make_glyphs(300, seed=3)
    b, lb = make_glyphs(300, seed=3)
    c, _ = make_glyphs(300, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_glyphs_shape_labels_and_ink():
    x, y = make_glyphs(2000, seed=0)
    assert x.shape == (2000, 1, 28, 28) and x.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))
    assert np.bincount(y).min() > 150                      # roughly balanced: 200 expected per class
    # MNIST-like: white ink on black, ink mostly away from the border.
    assert x[:, :, :2, :].mean() < 5 and x[:, :, 10:18, 10:18].mean() > 60


def test_glyphs_have_real_variety_within_a_class():
    """Not ten repeated stamps: every image is distinct, and two images of the same digit differ
    on average by a large fraction of their ink."""
    x, y = make_glyphs(1000, seed=1)
    flat = x.reshape(len(x), -1).astype(np.float32) / 255
    assert len(np.unique(flat, axis=0)) == len(flat)
    for digit in (1, 7):
        same = flat[y == digit][:40]
        d = np.abs(same[:, None] - same[None]).sum(-1)    # pairwise L1 distances
        ink = same.sum(-1).mean()
        assert np.median(d[np.triu_indices(len(same), 1)]) > 0.5 * ink


def test_glyph_classes_are_separable_by_template_matching():
    """Each class is its own digit: a nearest-class-mean classifier, fit on one seed and tested
    on another, is far above chance (10%)."""
    xtr, ytr = make_glyphs(3000, seed=10)
    xte, yte = make_glyphs(500, seed=11)
    xtr = xtr.reshape(len(xtr), -1) / 255.0
    xte = xte.reshape(len(xte), -1) / 255.0
    means = np.stack([xtr[ytr == k].mean(0) for k in range(10)])
    pred = ((xte[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yte).mean() > 0.6


def test_shapes_are_rgb_with_four_classes_and_visible_shapes():
    x, y = make_shapes(400, seed=0)
    assert x.shape == (400, 3, 32, 32) and x.dtype == np.uint8
    assert len(SHAPE_CLASSES) >= 4 and set(np.unique(y)) == set(range(len(SHAPE_CLASSES)))
    # The shape differs from the background: the centre region's colour spread is large.
    centre = x[:, :, 12:20, 12:20].astype(float)
    corner = x[:, :, :3, :3].astype(float)
    assert np.abs(centre.mean((2, 3)) - corner.mean((2, 3))).sum(1).mean() > 60
    # Backgrounds vary between images.
    assert corner.mean((2, 3)).std(0).min() > 30
    a, _ = make_shapes(400, seed=0)
    assert np.array_equal(a, x)


def test_shapes64_are_the_same_pictures_drawn_with_four_times_the_pixels():
    """Same seed, same shapes: each 2x2 block of a 64 px image averages to the 32 px pixel, up
    to the sensor noise (σ = 0.03·255 ≈ 7.7 levels per pixel), while two different pictures
    differ by far more; an upscaled 32 px set would have flat 2x2 blocks, these do not."""
    big, y_big = make_shapes(300, seed=3, size=64)
    small, y_small = make_shapes(300, seed=3)
    assert big.shape == (300, 3, 64, 64) and np.array_equal(y_big, y_small)
    big, small = big.astype(float), small.astype(float)
    block_mean = big.reshape(300, 3, 32, 2, 32, 2).mean((3, 5))
    assert np.abs(block_mean - small).mean() < 10
    assert np.abs(small - np.roll(small, 1, axis=0)).mean() > 50
    assert big.reshape(300, 3, 32, 2, 32, 2).std((3, 5)).mean() > 3        # detail inside each block


def test_load_dataset_caches_and_returns_model_range(tmp_path):
    ds = load_dataset("glyphs", "test", n=64, seed=5)
    files = list(cache_dir().glob("glyphs-*test-seed5-n64.npz"))
    assert len(files) == 1
    again = load_dataset("glyphs", "test", n=64, seed=5)
    assert torch.equal(ds.images, again.images)
    x, y = ds.batch(torch.arange(8))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1
    assert y.dtype == torch.int64
    # Train and test come from different random streams.
    train = load_dataset("glyphs", "train", n=64, seed=5)
    assert not torch.equal(train.images, ds.images)


def test_pixel_range_mapping_is_linear_and_inverse():
    """x = pixel/127.5 − 1 maps 0 -> −1, 255 -> 1, and back."""
    pixels = torch.arange(256, dtype=torch.uint8)
    x = to_float(pixels)
    assert x[0] == -1 and x[255] == 1 and abs(x[128].item() - (128 / 127.5 - 1)) < 1e-6
    assert torch.equal(to_uint8(x), pixels)


def test_random_flip_mirrors_about_half_the_images():
    ds = load_dataset("shapes", n=200)
    g = torch.Generator().manual_seed(0)
    x, _ = ds.batch(torch.arange(200), flip=True, generator=g)
    plain, _ = ds.batch(torch.arange(200))
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(x, plain)])
    same = torch.tensor([torch.equal(a, b) for a, b in zip(x, plain)])
    assert (flipped | same).all()
    assert 60 < flipped.sum() < 140


def test_channel_conversion_and_downsizing():
    ds = load_dataset("shapes", n=10, channels=1, size=16)
    assert ds.shape == (1, 16, 16)
    rgb = load_dataset("glyphs", n=10, channels=3)
    assert rgb.shape == (3, 28, 28) and torch.equal(rgb.images[:, 0], rgb.images[:, 2])
