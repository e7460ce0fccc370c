"""Every data set minigen knows, one entry each: its name, how it is read, its class names, where
it can be downloaded from. A new source (a system folder, another data set) is one more entry.

    name      reader                            classes              download
    glyphs    generated here (glyphs.py)        the digits 0-9       -
    shapes    generated here (shapes.py)        4 shapes             -
    shapes64  the same drawn at 64x64           4 shapes             -
    captioned-shapes  drawn here, with captions (captioned.py)  4 shapes  -
    emoji     drawn here from Debian's emoji font and list (emoji.py)  9 groups  -
    mnist     IDX files (readers.py)            the digits 0-9       LeCun et al.'s files
    fashion   IDX files                         10 clothing classes  Xiao et al. 2017's files
    cifar10   CIFAR python batches              10 object classes    Krizhevsky 2009's archive
A folder of the user's images is `folder:PATH` (readers.read_folder): its classes are its subfolders.
Every set has captions (captioning.py): captioned-shapes names five attributes per image, emoji
each emoji; the others name the class ("a picture of a sneaker", "the digit 7").
Real data is looked for in the data root (ROOT/name), then where an operating-system package puts
it (Fashion-MNIST: Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist; Debian has
no MNIST or CIFAR-10 package).
"""

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable


from . import captioned, emoji, glyphs, readers, shapes
from .captioning import Captioning, class_captioning

FOLDER = "folder:"


@dataclass(frozen=True)
class Source:
    name: str
    about: str
    classes: list[str]
    # read(split, folder) -> (images (N, C, H, W) uint8, labels (N,) int64) for files on disk
    read: Callable | None = None
    # make(n, seed) -> the same, for a set drawn here; sizes of its train and test splits
    make: Callable | None = None
    sizes: tuple[int, int] = (60_000, 10_000)
    version: int = 1                                 # of the generator: a new version is a new cache entry
    takes_split: bool = False                        # make(n, seed, split): the splits differ in kind (held-out pairs)
    captioning: "Captioning | None" = None           # its own captions (default: ones naming the class)
    # for --download: mirrors tried in order, and {file name: published MD5}
    mirrors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    # where an operating-system package puts the same files, looked in after the data root
    system: list[str] = field(default_factory=list)
    package: str | None = None                        # that package's name, for the message
    contents: dict[str, str] = field(default_factory=dict)   # SHA-256 of each decompressed file
    holds: list[str] = field(default_factory=list)    # what a folder with the data has (files may be .gz)
    # a set drawn here from files this machine has (emoji): catalogue(ROOT/name) finds and reads them
    catalogue: Callable | None = None


# SHA-256 of the decompressed Fashion-MNIST files (the IDX bytes, whatever the compression), derived
# once with `gunzip -c FILE | sha256sum` from Debian's package dataset-fashion-mnist, which ships the
# original images and labels recompressed (so its .gz MD5s differ from the published ones).
FASHION_CONTENTS = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

NAMED = Captioning(captioned.ATTRIBUTES, lambda facts, phrasing=0: [captioned.caption(f, phrasing) for f in facts],
                   captioned.is_held_out)       # the captioned shapes' five attributes

REGISTRY = {s.name: s for s in [
    Source("glyphs", "MNIST-like digits drawn here, 28x28 grayscale", glyphs.CLASSES, make=glyphs.make_glyphs,
           captioning=class_captioning(glyphs.CLASSES, "the digit {}")),
    Source("shapes", "coloured shapes drawn here, 32x32 RGB", shapes.CLASSES, make=shapes.make_shapes),
    Source("captioned-shapes", "shapes drawn here from five named attributes, with captions, 32x32 RGB", shapes.CLASSES,
           make=captioned.make_captioned_shapes, takes_split=True, sizes=(30_000, 6_000),
           captioning=NAMED),
    Source("captioned-shapes-all", "captioned-shapes with every combination in both splits: for judges", shapes.CLASSES,
           make=captioned.make_every_combination, takes_split=True, sizes=(30_000, 6_000),
           captioning=NAMED),
    Source("emoji", "every emoji, drawn by Debian's colour emoji font and named by the Unicode list, 32x32 RGB",
           [], catalogue=emoji.catalogue, sizes=(3_531, 3_655), package=emoji.PACKAGES),
    # 64 px for latent diffusion's comparison: drawn, not upscaled; 20,000 images (60,000 would be 737 MB)
    Source("shapes64", "coloured shapes drawn here, 64x64 RGB", shapes.CLASSES, make=partial(shapes.make_shapes, size=64),
           sizes=(20_000, 2_000)),
    Source("mnist", "handwritten digits, 28x28 grayscale (LeCun et al. 1998)", glyphs.CLASSES,
           captioning=class_captioning(glyphs.CLASSES, "the digit {}"),
           read=readers.read_mnist_like, holds=IDX_FILES,
           mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
           files={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                  "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                  "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                  "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    Source("fashion", "Fashion-MNIST clothes, 28x28 grayscale (Xiao et al. 2017)", FASHION_CLASSES,
           read=partial(readers.read_mnist_like, contents=FASHION_CONTENTS),
           system=["/usr/share/datasets/fashion-mnist"], package="dataset-fashion-mnist", contents=FASHION_CONTENTS,
           holds=IDX_FILES,
           mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
           files={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    Source("cifar10", "CIFAR-10 photos, 32x32 RGB (Krizhevsky 2009)", CIFAR10_CLASSES, read=readers.read_cifar10,
           holds=["cifar-10-batches-py"],
           mirrors=["https://www.cs.toronto.edu/~kriz/"],
           files={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
]}
NAMES = [*REGISTRY, FOLDER + "PATH"]
DOWNLOADABLE = [s.name for s in REGISTRY.values() if s.files]


def folder_path(name: str) -> Path | None:
    """The folder of a `folder:PATH` data set name, else None."""
    return Path(name[len(FOLDER):]).expanduser() if name.startswith(FOLDER) else None
