"""Download MNIST, Fashion-MNIST and CIFAR-10 from their public homes, verified and atomic.

Only when asked (`--download`): minigen never downloads by default. Each file is fetched
from the first mirror that answers, streamed into `NAME.part` beside its destination while
its MD5 is computed, compared with the published checksum, and only then renamed into
place (`os.replace` is atomic on one file system). A checksum mismatch deletes the partial
file and raises DataError. The CIFAR-10 archive is unpacked into a temporary folder that is
renamed into place once complete.
"""

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..runtime import progress_bar

# Published MD5 checksums of the distributed files.
SOURCES = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
    "cifar10": {
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"],
        "files": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    },
}


def fetch(url: str, dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Stream `url` to `dest`, verifying its MD5; `dest` appears only if the checksum matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); "
                        "the download was corrupted or the mirror changed: try again later")
    os.replace(part, dest)


def download(name: str, root: Path, mirrors: list[str] | None = None,
             checksums: dict[str, str] | None = None) -> Path:
    """Download data set `name` into root/name and return that folder. Files already present
    with the right checksum are kept. `mirrors` and `checksums` replace the built-in ones
    (the tests use them to serve small files from 127.0.0.1)."""
    if name not in SOURCES:
        raise DataError(f"cannot download {name!r}; downloadable: {', '.join(SOURCES)}")
    source = SOURCES[name]
    mirrors = mirrors or source["mirrors"]
    checksums = checksums or source["files"]
    folder = Path(root) / name
    for filename, md5 in checksums.items():
        dest = folder / filename
        if dest.is_file() and _md5(dest) == md5:
            continue
        errors = []
        for mirror in mirrors:
            try:
                fetch(mirror.rstrip("/") + "/" + filename, dest, md5)
                break
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{mirror}: {getattr(e, 'reason', e)}")
        else:
            raise DataError(f"could not download {filename}: " + "; ".join(errors))
    if name == "cifar10":
        _unpack(folder / "cifar-10-python.tar.gz", folder)
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(archive: Path, folder: Path) -> None:
    """Unpack the CIFAR archive into folder/cifar-10-batches-py, all or nothing."""
    target = folder / "cifar-10-batches-py"
    if target.is_dir():
        return
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")  # refuses absolute paths and '..'
                else:  # Python < 3.10.12 has no filters: check member paths by hand
                    for member in tar.getmembers():
                        if member.name.startswith("/") or ".." in Path(member.name).parts:
                            raise DataError(f"{archive}: unsafe path {member.name!r} in archive")
                    tar.extractall(tmp)
        except tarfile.TarError as e:
            raise DataError(f"{archive}: not a readable tar.gz ({e}); delete it and download again") from None
        unpacked = Path(tmp) / "cifar-10-batches-py"
        if not unpacked.is_dir():
            raise DataError(f"{archive}: has no cifar-10-batches-py folder inside")
        shutil.move(str(unpacked), target)
