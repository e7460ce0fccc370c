"""Readers for real data on disk: MNIST-style IDX files, CIFAR-10 python batches, image folders.

Every reader returns uint8 images (N, C, H, W) and int64 labels (N,), or raises DataError
with one line naming the file and what to do.

Formats:
    IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
        0x00 0x00 <dtype code> <number of dimensions>, then each dimension as a big-endian
        int32, then the data. Read raw or gzipped.
    CIFAR-10 python batches (Krizhevsky 2009): pickled dicts with b"data" (N, 3072) uint8,
        rows of 1024 red, 1024 green, 1024 blue values, and b"labels". They are read with an
        unpickler that only builds dicts, lists, strings, numbers and NumPy arrays, so a
        tampered batch file cannot run code.
    Image folders: PNG, JPEG, WebP (and anything else Pillow opens), found recursively; the
        class of an image is its first-level subfolder when there are subfolders.
"""

import gzip
import hashlib
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# IDX dtype codes -> NumPy big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or .gz) into an array of its stated shape. With `sha256`, the
    decompressed contents must have that digest (what matters is the data, not how it was
    compressed: the published files and Debian's recompressed ones both pass)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); delete it and download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number); is it an MNIST-format file?")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header promises {expected} bytes but the file has {len(raw)}; "
                        "the file is truncated or corrupt, download it again")
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"{path}: its contents are not the data set's (SHA-256 of the decompressed data "
                        "differs); the file was altered: delete it and download it again")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    """Find `stem` or `stem.gz` in root (accepting the '-idx3-ubyte' / '.idx3-ubyte' spellings)."""
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / stem}[.gz]: not found; put the IDX files in {root} or pass --download")


def read_mnist_like(root: Path, split: str, contents: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST from `root`: images (N, 1, 28, 28) uint8, labels (N,) int64.
    contents: SHA-256 of each file's decompressed data, by name without .gz, to check it against."""
    prefix = "train" if split == "train" else "t10k"
    contents = contents or {}
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"), contents.get(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"), contents.get(f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return images[:, None].astype(np.uint8), labels.astype(np.int64)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds only what CIFAR batches contain; any other global is refused, never imported."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches from `root` (or root/cifar-10-batches-py): (N, 3, 32, 32) uint8."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: not found; put the CIFAR-10 python batches in {root} or pass --download")
        try:
            batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
            data, batch_labels = batch[b"data"], batch[b"labels"]
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a CIFAR-10 python batch ({e}); download it again") from None
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))  # (N, 3072) -> (N, C, H, W)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def eight_bit(img: Image.Image, name) -> Image.Image:
    """A 16-bit or 32-bit integer grayscale image ("I;16", "I") or a float one ("F") as 8-bit "L"
    at its real grey levels: Pillow's own convert("L") clips every value above 255 to white.
    Integers are read as 16-bit (0..65535, a 16-bit PNG's range), floats as [0, 1]; other
    values are refused (DataError), since no scale for them can be known."""
    if img.mode.startswith("I"):
        a = np.asarray(img).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{name}: a {img.mode} image with values outside 0..65535; save it as 8 or 16 bits first")
        return Image.fromarray(np.rint(a / 257).astype(np.uint8), "L")          # 65535 -> 255
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all() or (a.size and (a.min() < 0 or a.max() > 1)):
            raise DataError(f"{name}: a floating-point image whose values are not all in [0, 1]; "
                            "save it as an 8 or 16-bit image first")
        return Image.fromarray(np.rint(a * 255).astype(np.uint8), "L")
    return img


def resize_center_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    """Scale so the image covers (height, width), keeping its aspect ratio, then crop the centre."""
    scale = max(height / img.height, width / img.width)
    new = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((left, top, left + width, top + height))


def read_folder(root: Path, size: int | tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image below `root`, resized and centre-cropped to `size`, as `channels` (1 or 3).

    Returns images (N, C, H, W) uint8, labels (N,) int64 and the class names. Unreadable files
    are skipped and counted in one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give folder:PATH with a folder of images")
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise DataError(f"image size {height}x{width} is not a size; ask for a positive one")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    # Class = first-level subfolder, when images live in subfolders; otherwise one class.
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files]
    classes = sorted(set(tops)) if any(tops) else ["images"]
    index = {name: i for i, name in enumerate(classes)}
    mode = "L" if channels == 1 else "RGB"
    images, labels, bad, upscaled = [], [], [], 0
    for path, top in zip(files, tops):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    img.load()
                    if img.height < height or img.width < width:
                        upscaled += 1
                    img = resize_center_crop(eight_bit(img, path.name).convert(mode), height, width)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, DataError,
                Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            bad.append(f"{path.name} ({type(e).__name__})")
            continue
        arr = np.asarray(img, dtype=np.uint8)
        images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)
        labels.append(index.get(top, 0))
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"{root}: skipped {len(bad)} unreadable or corrupt image(s): {shown}", stacklevel=2)
    if not images:
        raise DataError(f"{root}: none of the {len(files)} image files could be read")
    if upscaled:
        warnings.warn(f"{root}: {upscaled} image(s) were smaller than {height}x{width} and were upscaled", stacklevel=2)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


# ---- one image or mask from a user, for editing ------------------------------------------------

def read_image(path, channels: int, size: tuple[int, int], name: str | None = None) -> np.ndarray:
    """An image file (a path, or an open binary file such as an upload, called `name` in messages)
    as uint8 (C, H, W) at `size`, resized and centre-cropped; its channel count must be `channels`
    (1: grayscale, 3: RGB), so a colour photo is never silently made gray. A palette (or CMYK)
    image counts as RGB, and an RGB(A) one whose colour channels are equal everywhere (a gray
    picture saved from a canvas) as grayscale; an image so large that decoding it could exhaust memory (Pillow's
    decompression-bomb limit) is refused."""
    name = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
    except FileNotFoundError:
        raise DataError(f"{name}: no such image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{name}: refused, it has more pixels than Pillow's decompression-bomb limit "
                        f"({Image.MAX_IMAGE_PIXELS:,}); scale it down first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: not a readable image ({type(e).__name__})") from None
    img = eight_bit(img, name)                                              # 16-bit and float: real grey levels
    if img.mode not in ("1", "L", "LA", "RGB", "RGBA"):                      # palette, CMYK, ...: colour
        img = img.convert("RGBA" if "transparency" in img.info or img.mode.endswith("A") else "RGB")
    has = len(img.getbands()) - ("A" in img.getbands())
    if has == 3 and channels == 1:
        r, g, b = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
        has = 1 if ((r == g) & (g == b)).all() else 3
    if has != channels:
        kind = {1: "grayscale", 3: "RGB"}
        what = kind.get(has, f"{has}-channel")
        raise DataError(f"{name}: {'an' if what[0] in 'AEIOUR' else 'a'} {what} image, but the model makes "
                        f"{kind.get(channels, channels)} images; convert it first")
    arr = np.asarray(resize_center_crop(img.convert("L" if channels == 1 else "RGB"), *size), dtype=np.uint8)
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)).copy()    # (H, W, C) -> (C, H, W)


def box_mask(box: str, size: tuple[int, int]) -> np.ndarray:
    """keep (H, W) float: 0 inside the box "x0,y0,x1,y1" (pixels), 1 elsewhere."""
    H, W = size
    try:
        x0, y0, x1, y1 = (int(v) for v in box.split(","))
    except ValueError:
        raise DataError(f"--mask-box {box}: give four integers x0,y0,x1,y1") from None
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise DataError(f"--mask-box {box}: must lie inside the {W}x{H} image with x0 < x1, y0 < y1")
    keep = np.ones((H, W), dtype=np.float32)
    keep[y0:y1, x0:x1] = 0
    return keep


def read_mask(path, image_path, size: tuple[int, int], name: str | None = None,
              image_name: str | None = None) -> np.ndarray:
    """keep (H, W) float from a grayscale mask of the image's size: white (≥ 128) = regenerate (0).
    Paths or open binary files (`name`, `image_name` in messages). A mask saved as RGB(A) whose
    colour channels are equal everywhere (a canvas, most paint programs) counts as grayscale."""
    name, image_name = name or path, image_name or image_path
    try:
        with Image.open(path) as mask, Image.open(image_path) as image:
            mask.load()
            image_size = image.size
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{name}: not a readable image ({type(e).__name__})") from None
    mask = eight_bit(mask, name)                                            # 16-bit and float: real grey levels
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise DataError(f"{name}: a colour image; the mask must be grayscale (white = regenerate)")
    elif mask.mode not in ("L", "1"):
        raise DataError(f"{name}: a {mask.mode} image; the mask must be grayscale (white = regenerate)")
    if mask.size != image_size:
        raise DataError(f"{name}: {mask.size[0]}x{mask.size[1]}, but the image is "
                        f"{image_size[0]}x{image_size[1]}; the mask must have the image's size")
    keep = (np.asarray(resize_center_crop(mask.convert("L"), *size), dtype=np.float32) < 128).astype(np.float32)
    if keep.all():
        raise DataError(f"{name}: the mask is empty (no pixel at 128 or above at the model's size): nothing to "
                        "regenerate; paint the region white")
    return keep


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples written by `sample.py --save-npz` or by another tool: `images` uint8 (N, H, W, C)
    and, if present, `labels` (N,). Returns images (N, C, H, W) uint8 and the labels or None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            images = f["images"]
            labels = f["labels"] if "labels" in f.files else None
    except FileNotFoundError:
        raise DataError(f"{path}: no such samples file") from None
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: not a samples file with an 'images' array ({type(e).__name__})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{path}: images must be uint8 (N, H, W, C) with C = 1 or 3, not {images.dtype} {images.shape}")
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: labels must be integers, one per image, not {labels.dtype} {labels.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels         # (N, H, W, C) -> (N, C, H, W)
