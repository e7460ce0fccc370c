"""Readers for real data, on small files the tests write in the real formats."""

import gzip
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigen.data import load_dataset
from minigen.data.readers import read_cifar10, read_folder, read_idx, read_mnist_like
from minigen.errors import DataError


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """IDX as LeCun describes it: 0, 0, dtype code 0x08 (ubyte), ndim, big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "i" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_mnist(folder: Path, n: int = 12, gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_reads_raw_and_gzip(tmp_path, gz):
    images, labels = fake_mnist(tmp_path, gz=gz)
    x, y = read_mnist_like(tmp_path, "train")
    assert x.shape == (12, 1, 28, 28) and np.array_equal(x[:, 0], images)
    assert y.dtype == np.int64 and np.array_equal(y, labels)


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "a-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)
    (tmp_path / "b").write_bytes(b"\x89PNG not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "b")
    (tmp_path / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "c.gz")


def test_mnist_loads_through_load_dataset_and_fake_fashion_is_refused(tmp_path):
    images, _ = fake_mnist(tmp_path / "mnist", n=5)
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert ds.shape == (1, 28, 28) and len(ds) == 5 and ds.classes[9] == "9"
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    with pytest.raises(DataError, match="cannot give 64x64"):
        load_dataset("mnist", root=tmp_path, size=64)
    with pytest.raises(DataError, match="no files in.*--download"):
        load_dataset("cifar10", root=tmp_path)
    fake_mnist(tmp_path / "fashion", n=5)          # Fashion-MNIST's files are checked by their contents
    with pytest.raises(DataError, match="contents are not the data set's"):
        load_dataset("fashion", "test", root=tmp_path)


def write_cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"testing", b"labels": labels, b"data": data, b"filenames": [b"x"] * n}, f)
    return data, labels


def test_cifar10_batches_are_read_channel_planar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", 3, seed=i)
    data, labels = write_cifar_batch(folder / "test_batch", 4, seed=9)
    x, y = read_cifar10(tmp_path, "test")
    assert x.shape == (4, 3, 32, 32) and list(y) == labels
    # Row layout: 1024 red values, then green, then blue, each row-major 32x32.
    assert x[2, 1, 5, 7] == data[2, 1024 + 5 * 32 + 7]
    x_train, _ = read_cifar10(tmp_path, "train")
    assert len(x_train) == 15


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/minigen-should-not-exist", "w"))


def test_cifar_reader_refuses_a_pickle_that_carries_code(tmp_path):
    marker = Path("/tmp/minigen-should-not-exist")
    marker.unlink(missing_ok=True)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}))
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        read_cifar10(tmp_path, "test")
    assert not marker.exists()


def _save(path: Path, size, color, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def test_folder_reader_classes_formats_recursion_and_corrupt_files(tmp_path):
    _save(tmp_path / "cat" / "a.png", (40, 40), (255, 0, 0))
    _save(tmp_path / "cat" / "deep" / "b.jpg", (50, 30), (250, 0, 0), "JPEG")
    _save(tmp_path / "dog" / "c.webp", (64, 64), (0, 0, 255), "WEBP")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y, classes = read_folder(tmp_path, 16, channels=3)
    assert classes == ["cat", "dog"]
    assert x.shape == (3, 3, 16, 16) and list(y) == [0, 0, 1]
    assert x[2, 2].mean() > 240 and x[2, 0].mean() < 15            # the dog is blue
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 unreadable or corrupt image(s): broken.png" in m for m in messages)
    gray, _, _ = read_folder(tmp_path, 8, channels=1)
    assert gray.shape == (3, 1, 8, 8)
    # Red (255, 0, 0) in luma: 0.299·255 ≈ 76.
    assert abs(int(gray[0, 0, 4, 4]) - 76) <= 1


def test_folder_resize_keeps_aspect_and_crops_the_centre(tmp_path):
    """A 60x20 image whose middle third is white: scaled to height 12 (36x12), the centre
    12x12 crop is exactly the white third."""
    img = Image.new("L", (60, 20), 0)
    img.paste(255, (20, 0, 40, 20))
    img.save(tmp_path / "wide.png")
    x, y, classes = read_folder(tmp_path, 12, channels=1)
    assert classes == ["images"] and list(y) == [0]
    assert x[0, 0, :, 2:10].min() > 200                              # the white middle
    assert x.shape == (1, 1, 12, 12)


def test_folder_errors_missing_empty_and_all_corrupt(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_folder(tmp_path / "nope", 32, 3)
    with pytest.raises(DataError, match="no images found"):
        read_folder(tmp_path, 32, 3)
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(DataError, match="none of the 1 image"):
        read_folder(tmp_path, 32, 3)
    with pytest.raises(DataError, match="needs a size"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(DataError, match="glyphs, shapes, captioned-shapes, captioned-shapes-all, emoji, shapes64, mnist"):
        load_dataset("imagenet")


def test_16_bit_and_float_grayscale_images_keep_their_grey_levels(tmp_path):
    """A 16-bit PNG of grey level g·257 (0..65535) reads as g (0..255), and a float image of v in
    [0, 1] as round(255·v), in a folder, as an image to edit and as a mask; Pillow's own
    conversion would clip all of them to white. A float image outside [0, 1] or a 32-bit one
    past 16 bits has no known scale and is refused in one line."""
    from minigen.data.readers import read_image, read_mask
    levels = np.array([[0, 64, 128, 255]] * 4, dtype=np.uint16)               # (4, 4) grey levels
    Image.fromarray(levels * 257).save(tmp_path / "sixteen.png")                 # mode I;16 (or I)
    Image.fromarray((levels / 255).astype(np.float32)).save(tmp_path / "float.tiff")   # mode F
    for name in ("sixteen.png", "float.tiff"):
        assert Image.open(tmp_path / name).mode in ("I;16", "I", "F")
        image = read_image(tmp_path / name, 1, (4, 4))
        assert image.shape == (1, 4, 4) and (image[0] == levels).all(), (name, image[0])
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(levels * 257).save(folder / "a.png")
    images, _, _ = read_folder(folder, 4, 1)
    assert (images[0, 0] == levels).all()
    keep = read_mask(tmp_path / "sixteen.png", tmp_path / "sixteen.png", (4, 4))
    assert (keep == (levels < 128)).all()
    Image.fromarray(np.full((4, 4), 2.0, dtype=np.float32)).save(tmp_path / "bright.tiff")
    with pytest.raises(DataError, match="not all in \\[0, 1\\]"):
        read_image(tmp_path / "bright.tiff", 1, (4, 4))
    Image.fromarray(np.full((4, 4), 100_000, dtype=np.int32)).save(tmp_path / "wide.tiff")
    with pytest.raises(DataError, match="outside 0..65535"):
        read_image(tmp_path / "wide.tiff", 1, (4, 4))


def test_a_gray_picture_saved_as_rgba_is_grayscale_and_a_colour_one_is_not(tmp_path):
    """What a browser canvas saves is RGBA: with R = G = B everywhere it is a grayscale image (its
    grey levels kept exactly), with one coloured pixel it is refused for a grayscale model."""
    from minigen.data.readers import read_image
    levels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    rgba = np.stack([levels, levels, levels, np.full_like(levels, 255)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "gray.png")
    assert (read_image(tmp_path / "gray.png", 1, (4, 4))[0] == levels).all()
    rgba[0, 1, 0] = 0                                                       # one pixel no longer gray
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="an RGB image, but the model makes grayscale images"):
        read_image(tmp_path / "colour.png", 1, (4, 4))


def test_an_all_black_mask_is_refused_as_empty(tmp_path):
    from minigen.data.readers import read_mask
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "image.png")
    with pytest.raises(DataError, match="the mask is empty"):
        read_mask(tmp_path / "black.png", tmp_path / "image.png", (8, 8))
