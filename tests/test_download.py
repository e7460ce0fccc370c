"""Download against an HTTP server the test starts on 127.0.0.1: never the internet."""

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from minigen.data import load_dataset
from minigen.data.download import download
from minigen.errors import DataError
from tests.test_readers import fake_mnist


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 at a free port; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_checksums_and_the_files_load(server, tmp_path):
    www, url = server
    images, labels = fake_mnist(www, n=7)
    checksums = {p.name: md5_of(p) for p in sorted(www.iterdir())}
    root = tmp_path / "data"
    # The first mirror does not exist; the second serves the files.
    folder = download("mnist", root, mirrors=[url + "missing/", url], checksums=checksums)
    assert sorted(p.name for p in folder.iterdir()) == sorted(checksums)
    ds = load_dataset("mnist", root=root)
    assert np.array_equal(ds.images[:, 0].numpy(), images) and ds.labels.tolist() == labels.tolist()


def test_download_with_a_bad_checksum_leaves_nothing_behind(server, tmp_path):
    www, url = server
    fake_mnist(www, n=3)
    checksums = {p.name: md5_of(p) for p in sorted(www.iterdir())}
    name = "train-images-idx3-ubyte.gz"
    checksums[name] = "0" * 32
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch"):
        download("mnist", root, mirrors=[url], checksums=checksums)
    leftovers = [p.name for p in (root / "mnist").iterdir()]
    assert name not in leftovers and not any(n.endswith(".part") for n in leftovers)


def test_download_of_cifar10_unpacks_the_archive(server, tmp_path):
    www, url = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
            payload = pickle.dumps({b"data": np.full((n, 3072), 7, np.uint8), b"labels": [1] * n})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (www / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    checksums = {"cifar-10-python.tar.gz": hashlib.md5(buf.getvalue()).hexdigest()}
    root = tmp_path / "data"
    download("cifar10", root, mirrors=[url], checksums=checksums)
    ds = load_dataset("cifar10", "test", root=root)
    assert ds.shape == (3, 32, 32) and len(ds) == 3 and int(ds.images.max()) == 7


def test_download_of_an_unknown_set_is_refused(tmp_path):
    with pytest.raises(DataError, match="cannot download"):
        download("imagenet", tmp_path)


def test_unreachable_mirrors_give_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download train-images"):
        download("mnist", tmp_path, mirrors=["http://127.0.0.1:9/"],
                 checksums={"train-images-idx3-ubyte.gz": "0" * 32})
