"""Look at a data set, or download one.

    python -m minigen.data show glyphs --out glyphs.png        # a labelled grid of samples
    python -m minigen.data show folder:~/cars --size 64 -n 32
    python -m minigen.data show captioned-shapes --captions -n 8   # each image beside its caption
    python -m minigen.data show emoji --shuffle -n 40          # 40 at random (Debian's emoji font and list)
    python -m minigen.data download mnist --root data          # MNIST, Fashion-MNIST, CIFAR-10
"""

import argparse
import sys
import time

import torch

from ..cli import SEED, Parser, at_least, number, run, writable_image
from ..errors import MinigenError
from ..images import save_grid
from . import DOWNLOADABLE, NAMES, cache_dir, data_root, download, load_dataset


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="write a labelled grid of samples from a data set")
    show.add_argument("dataset", help=f"one of: {', '.join(NAMES)}")
    show.add_argument("--split", default="train", choices=["train", "test"], help="which split (default: train)")
    show.add_argument("-n", type=number(int, at_least(1)), default=100, help="how many images in the grid (default: 100)")
    show.add_argument("--size", type=number(int, at_least(1)), default=None, help="resize to SIZE x SIZE (required for folder:PATH)")
    show.add_argument("--channels", type=int, default=None, choices=[1, 3], help="convert to 1 or 3 channels")
    show.add_argument("--root", default=None, help=f"folder of real data sets (default: {data_root()})")
    show.add_argument("--download", action="store_true", help="download mnist/fashion/cifar10 if missing")
    show.add_argument("--seed", type=number(int, SEED), default=0, help="seed of a built-in set (default: 0)")
    show.add_argument("--out", default="dataset.png", help="where to write the grid (default: dataset.png)")
    show.add_argument("--shuffle", action="store_true", help="images drawn at random (by --seed), not the first N")
    show.add_argument("--captions", action="store_true", help="one image a row, beside its caption (in turn in each "
                                                             "phrasing), instead of a grid labelled by class")
    get = sub.add_parser("download", help="download a data set: " + ", ".join(DOWNLOADABLE))
    get.add_argument("dataset", choices=DOWNLOADABLE)
    get.add_argument("--root", default=None, help=f"where to put it (default: {data_root()})")
    args = parser.parse_args(argv)

    try:
        out = writable_image(args.out) if args.command == "show" else None
        if args.command == "download":
            folder = download(args.dataset, args.root or data_root())
            print(f"{args.dataset}: files verified in {folder}")
            return 0
        start = time.perf_counter()
        ds = load_dataset(args.dataset, args.split, root=args.root, size=args.size, channels=args.channels,
                          seed=args.seed, download_missing=args.download)
        print(f"{ds.name} {args.split}: {len(ds)} images of shape {ds.shape}, {len(ds.classes)} classes "
              f"({time.perf_counter() - start:.1f}s; generated sets are cached in {cache_dir()})")
        index = (torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed)) if args.shuffle
                 else torch.arange(len(ds)))[:args.n]
        x, y = ds.batch(index)
        if args.captions:
            texts = [ds.captions(index[i:i + 1], phrasing=i)[0] for i in range(len(index))]
            path = save_grid(x, out, nrow=1, row_labels=texts, scale=2)
        else:
            path = save_grid(x, out, nrow=10, captions=[ds.classes[i][:8] for i in y.tolist()])
        print(f"wrote {path}")
        return 0
    except MinigenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run(main))
