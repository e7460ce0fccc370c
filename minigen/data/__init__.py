"""Data: built-in generated sets and readers for real data, all reaching models the same way.

    ds = load_dataset("glyphs")                   # built in, no download (MNIST-like digits)
    ds = load_dataset("shapes")                   # built in, 32x32 RGB shapes
    ds = load_dataset("mnist", root="data")       # IDX files in data/mnist (or --download)
    ds = load_dataset("folder:~/cars", size=64)   # any folder of images
    registry.py lists every data set: its reader, class names and download source.
    x, y = ds.batch(torch.arange(16))             # x: (16, C, H, W) float in [-1, 1], y: (16,)

Images are kept as uint8 (N, C, H, W) and turned into floats in [-1, 1] per batch:
    x = pixel / 127.5 − 1     (Ho et al. 2020, §3.3: data scaled linearly to [−1, 1])
"""

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import at_least, between, setting
from ..errors import DataError
from ..progress import progress_bar
from ..images import to_uint8  # noqa: F401  (the inverse of to_float, kept beside it for readers)
from . import readers
from .download import download
from .captioning import Captioning, class_captioning
from .registry import DOWNLOADABLE, NAMES, REGISTRY, folder_path


def cache_dir() -> Path:
    """Where generated data sets are cached: $MINIGEN_CACHE, else $XDG_CACHE_HOME/minigen,
    else ~/.cache/minigen. Deleting it is always safe."""
    if os.environ.get("MINIGEN_CACHE"):
        return Path(os.environ["MINIGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minigen"


def data_root() -> Path:
    """Default folder for real data sets: $MINIGEN_DATA, else ./data."""
    return Path(os.environ.get("MINIGEN_DATA", "data"))


@dataclass
class DataConfig:
    """The data settings every training script shares; its config dataclass extends this one."""
    dataset: str = setting("glyphs", " | ".join(NAMES))
    image_size: int | None = setting(None, "resize images to SIZE x SIZE (required for folder:PATH; built-in sets only shrink)",
                                    check=between(1, 1024))
    channels: int | None = setting(None, "convert images to 1 (grayscale) or 3 (RGB) channels", choices=(1, 3))
    data_root: str | None = setting(None, "folder holding mnist/, fashion/, cifar10/ (default: ./data or $MINIGEN_DATA)",
                                    runtime=True)
    download: bool = setting(False, f"download {' / '.join(DOWNLOADABLE)} into --data-root if missing", runtime=True)
    flip: bool = setting(False, "random horizontal flips of the training images (not for digits!)")
    only_classes: str | None = setting(None, "comma-separated class names: train on their images only (the model "
                                             "still has a row for every class, e.g. to fine-tune on one)")
    drop_classes: str | None = setting(None, "comma-separated class names whose images are left out")
    max_images: int | None = setting(None, "train on the first N images (after the class filters)", check=at_least(1))
    replay: int | None = setting(None, "with --only-classes: also train on the first N images of the other classes "
                                       "(rehearsal, so that fine-tuning on new classes does not forget the old)",
                                 check=at_least(1))

    def select(self, images: "ImageSet", limit: bool = True) -> "ImageSet":
        """The images these settings train on: the class filters, then the first --max-images,
        then --replay images of the classes --only-classes leaves out (unless limit is False: a
        test split keeps all of its selected classes' images and nothing else).
        Rehearsal (Robins 1995, Catastrophic forgetting, rehearsal and pseudorehearsal): a network
        trained on new items alone drifts away from the old ones; a few old items kept among the
        new ones hold it to them."""
        only, drop = _names(self.only_classes), _names(self.drop_classes)
        chosen = images.subset(only=only, drop=drop, limit=self.max_images if limit else None)
        if not (limit and self.replay):
            return chosen
        if only is None:
            raise DataError("--replay N rehearses the classes that --only-classes leaves out: give --only-classes")
        return chosen.joined(images.subset(drop=only + (drop or []), limit=self.replay))


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@dataclass
class ImageSet:
    """Images (N, C, H, W) uint8, labels (N,) int64 and class names; for a set drawn from named
    attributes (captioned-shapes) also those attributes (N, A) int64; and how to caption them."""
    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)
    attributes: torch.Tensor | None = None
    captioning: Captioning | None = None

    @property
    def facts(self) -> torch.Tensor:
        """What the captions name, (N, A): the attributes, or the label as the one attribute."""
        return self.attributes if self.attributes is not None else self.labels[:, None]

    def every_caption(self) -> list[str]:
        """Every caption this set can give: each combination of attribute values in each
        phrasing (what a tokenizer is learned from, so that no word of the data is unknown)."""
        captioning = self.captioning or class_captioning(self.classes)
        return [c for p in range(12) for c in captioning.every_combination(p)[0]]

    def captions(self, index: torch.Tensor, phrasing: int | None = None,
                 generator: torch.Generator | None = None) -> list[str]:
        """The captions of the images at `index`: in phrasing `phrasing`, or each in a phrasing
        drawn at random (a different wording of the same facts at every visit, for training)."""
        describe = (self.captioning or class_captioning(self.classes)).describe
        facts = self.facts[index]
        if phrasing is not None:
            return describe(facts, phrasing)
        picks = torch.randint(0, 12, (len(facts),), generator=generator).tolist()   # 12: a multiple of 3 and 4
        return [describe(f[None], p)[0] for f, p in zip(facts, picks)]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, only: list[str] | None = None, drop: list[str] | None = None,
               limit: int | None = None) -> "ImageSet":
        """The images of the classes named in `only` (all if None) and not in `drop`, the first
        `limit` of them. Labels and the class list stay as they are, so a model trained on a
        subset has a row for every class of the data set. Names match case-insensitively."""
        index = {c.lower(): i for i, c in enumerate(self.classes)}

        def ids(names: list[str]) -> list[int]:
            unknown = [n for n in names if n.lower() not in index]
            if unknown:
                raise DataError(f"{self.name} has no class {unknown[0]!r}; its classes: {', '.join(self.classes)}")
            return [index[n.lower()] for n in names]

        keep = torch.ones(len(self), dtype=torch.bool)
        if only is not None:
            keep &= torch.isin(self.labels, torch.tensor(ids(only), dtype=self.labels.dtype))
        if drop is not None:
            keep &= ~torch.isin(self.labels, torch.tensor(ids(drop), dtype=self.labels.dtype))
        chosen = keep.nonzero().flatten()[:limit]
        if len(chosen) == 0:
            raise DataError(f"{self.name}: no images left after the class filters")
        return ImageSet(self.name, self.images[chosen], self.labels[chosen], self.classes,
                        None if self.attributes is None else self.attributes[chosen], self.captioning)

    def joined(self, other: "ImageSet") -> "ImageSet":
        """This set's images followed by `other`'s (a part of the same data set: same classes)."""
        cat = lambda a, b: None if a is None else torch.cat([a, b])
        return ImageSet(self.name, cat(self.images, other.images), cat(self.labels, other.labels), self.classes,
                        cat(self.attributes, other.attributes), self.captioning)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.images[i]), self.labels[i]

    def batch(self, index: torch.Tensor, flip: bool = False,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at `index` as floats in [-1, 1], with a random horizontal flip per image if asked."""
        x = to_float(self.images[index])                                   # (B, C, H, W)
        if flip:
            mask = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x, self.labels[index]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """The indices of training step `step`'s batch for process `rank` of `world`.

    A pure function of its arguments: each epoch is a fresh permutation seeded by (seed, epoch),
    cut into global batches of batch_size·world (the incomplete last one dropped), and rank r
    takes the r-th slice of each. So a resumed run sees exactly the batches it would have seen,
    and the processes of a distributed run see disjoint shards.
    """
    per_epoch = n // (batch_size * world)
    if per_epoch == 0:
        raise DataError(f"the data set has {n} images, fewer than one batch of {batch_size * world}; "
                        "lower --batch-size")
    epoch, i = divmod(step, per_epoch)
    start = (i * world + rank) * batch_size
    return _epoch_permutation(n, seed, epoch)[start:start + batch_size]


def _generated(name: str, split: str, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A built-in set, from the cache or made now and cached."""
    source = REGISTRY[name]
    n = n or source.sizes[split != "train"]
    stream = seed * 2 + (split != "train")     # train and test come from different random streams
    make = lambda: source.make(n, stream, split) if source.takes_split else source.make(n, stream)
    return _cached(cache_dir() / f"{name}-v{source.version}-{split}-seed{seed}-n{n}.npz", make)


def _cached(path: Path, make) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from the cache file `path`, or make() and cache them (written atomically)."""
    if path.is_file():
        try:
            with np.load(path) as f:
                return f["images"], f["labels"]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)       # a damaged cache entry is simply made again
    images, labels = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)
        os.replace(tmp, path)
    except OSError:
        pass                                   # a read-only home only costs regeneration
    return images, labels


def _convert(images: torch.Tensor, name: str, size: int | None, channels: int | None) -> torch.Tensor:
    """Bring a fixed-size set to the requested channels and (smaller or equal) size."""
    if channels is not None and channels != images.shape[1]:
        if channels == 1:   # luma, ITU-R BT.601 weights (as Pillow's convert("L"))
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
        elif channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()            # (N, 1, H, W) -> (N, 3, H, W)
        else:
            raise DataError(f"channels must be 1 or 3, not {channels}")
    native = images.shape[-1]
    if size is not None and size != native:
        if size > native:
            raise DataError(f"{name} images are {native}x{native}; they cannot give {size}x{size} "
                            f"without inventing detail: ask for {native} or less, or use folder:PATH data")
        if size < 1:
            raise DataError(f"image size {size} is not a size; ask for a positive one")
        images = F.interpolate(images.float(), size=(size, size), mode="area").round().to(torch.uint8)
    return images


def locate(source, root: Path) -> Path:
    """The folder holding a real data set's files: ROOT/name, else the first system folder that
    has them (an operating-system package's), else a one-line DataError naming the remedies."""
    spellings = lambda name: [name, name.replace("-idx", ".idx")]             # as readers._find accepts
    has_data = lambda folder: all(any((folder / f"{spelling}{ext}").exists() for spelling in spellings(name)
                                      for ext in ("", ".gz")) for name in source.holds)
    candidates = [root / source.name] + [Path(p) for p in source.system]
    for folder in candidates:
        if folder.is_dir() and has_data(folder):
            return folder
    remedies = [f"pass --download to fetch it into {root / source.name}"]
    if source.package:
        remedies.append(f"install Debian's package {source.package} (apt-get install {source.package})")
    raise DataError(f"{source.name}: no files in {' or '.join(map(str, candidates))}; " + ", or ".join(remedies))


def load_dataset(name: str, split: str = "train", *, root: str | Path | None = None,
                 size: int | None = None, channels: int | None = None, n: int | None = None,
                 seed: int = 0, download_missing: bool = False) -> ImageSet:
    """Load data set `name` (see NAMES) as an ImageSet.

    split: "train" or "test" (a folder has one split, "train").
    size, channels: resize (down only, for fixed-size sets) and convert to 1 or 3 channels;
        for folders `size` is required and `channels` defaults to 3.
    n, seed: number of images and seed of a built-in generated set.
    download_missing: fetch mnist / fashion / cifar10 into root/name if not there.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    folder = folder_path(name)
    if folder is not None:
        if split != "train":
            raise DataError("an image folder has one split; use split='train'")
        if size is None:
            raise DataError("a folder data set needs a size (e.g. --image-size 64)")
        images, labels, classes = readers.read_folder(folder, size, channels or 3)
        return ImageSet(name, torch.from_numpy(images), torch.from_numpy(labels), classes,
                        captioning=class_captioning(classes))
    if name not in REGISTRY:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(NAMES)}")
    source = REGISTRY[name]
    captioning, classes = source.captioning, source.classes
    if source.catalogue is not None:          # drawn here from files this machine has (emoji)
        catalogue = source.catalogue(Path(root or data_root()) / name)
        side = size or 32
        if not 8 <= side <= 128:
            raise DataError(f"{name} is drawn at 8 to 128 pixels, not {side}")
        images, labels = _cached(cache_dir() / f"{name}-{catalogue.key}-{side}px.npz",
                                 lambda: (catalogue.draw(side, progress=functools.partial(
                                     progress_bar, desc=f"drawing {name}", leave=False)), catalogue.labels()))
        keep = catalogue.split(split)[:n]
        images, labels = images[keep], labels[keep]
        captioning, classes = catalogue.captioning(), catalogue.groups
    elif source.make is not None:
        images, labels = _generated(name, split, n, seed)
    else:
        if download_missing:
            download(name, Path(root or data_root()))
        images, labels = source.read(locate(source, Path(root or data_root())), split)
        if n is not None:
            images, labels = images[:n], labels[:n]
    images = _convert(torch.from_numpy(np.ascontiguousarray(images)), name, size, channels)
    labels = torch.from_numpy(np.ascontiguousarray(labels))
    attributes = labels if labels.ndim == 2 else None          # named attributes; the class is the first
    return ImageSet(name, images, labels[:, 0].contiguous() if attributes is not None else labels, list(classes),
                    attributes, captioning or class_captioning(classes))


def train_and_test(name: str, **kwargs) -> tuple[ImageSet, ImageSet]:
    """The train and test splits of a data set (load_dataset's keyword arguments). A folder of
    images has one split: every 10th image is held out as its test split."""
    if folder_path(name) is None:
        return load_dataset(name, "train", **kwargs), load_dataset(name, "test", **kwargs)
    images = load_dataset(name, "train", **kwargs)
    held = torch.arange(len(images)) % 10 == 0
    if held.all():
        raise DataError(f"{name}: {len(images)} image(s) cannot be split into a train and a test set; add more")
    pick = lambda keep: ImageSet(name, images.images[keep], images.labels[keep], images.classes,
                                 captioning=images.captioning)
    return pick(~held), pick(held)
