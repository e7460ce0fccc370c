"""Download MNIST, Fashion-MNIST and CIFAR-10 from their public homes, verified and atomic.

Only when asked (`--download`): minigen never downloads by default. Each file is fetched
from the first mirror that answers, streamed into `NAME.part` beside its destination while
its MD5 is computed, compared with the published checksum, and only then renamed into
place (`os.replace` is atomic on one file system). A checksum mismatch deletes the partial
file and raises DataError. The CIFAR-10 archive is unpacked into a temporary folder that is
renamed into place once complete.
"""

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..progress import progress_bar
from .registry import DOWNLOADABLE, REGISTRY


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
    if name not in DOWNLOADABLE:
        raise DataError(f"cannot download {name!r}; downloadable: {', '.join(DOWNLOADABLE)}")
    mirrors = mirrors or REGISTRY[name].mirrors
    checksums = checksums or REGISTRY[name].files  # published MD5s of the distributed files
    folder = Path(root) / name
    for filename, md5 in checksums.items():
        dest = folder / filename
        if dest.is_file() and (_md5(dest) == md5 or _same_contents(dest, REGISTRY[name].contents)):
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


def _same_contents(path: Path, contents: dict[str, str]) -> bool:
    """Whether a .gz file decompresses to the known data (another compression of the same files)."""
    stem = path.name.removesuffix(".gz")
    if stem not in contents:
        return False
    try:
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == contents[stem]
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


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
