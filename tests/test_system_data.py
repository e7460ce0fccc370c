"""Real data found where an operating-system package puts it, verified by what the files hold.

A temporary folder stands in for Debian's /usr/share/datasets/fashion-mnist: nothing here needs
the package or a download."""

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

from minigen.data import load_dataset, registry
from minigen.data.download import download
from minigen.errors import DataError
from tests.test_readers import fake_mnist


def contents_of(folder) -> dict[str, str]:
    """SHA-256 of each file's decompressed bytes, derived here the way the registry's were."""
    return {p.name.removesuffix(".gz"): hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
            for p in folder.glob("*.gz")}


@pytest.fixture
def system_fashion(tmp_path, monkeypatch):
    """Fake Fashion-MNIST in a folder arranged like the package's, registered as its location."""
    system = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    images, labels = fake_mnist(system, n=12, gz=True, seed=3)
    source = dataclasses.replace(registry.REGISTRY["fashion"], system=[str(system)], contents=contents_of(system),
                                 read=lambda folder, split: registry.readers.read_mnist_like(
                                     folder, split, contents=contents_of(system)))
    monkeypatch.setitem(registry.REGISTRY, "fashion", source)
    return system, images, labels


def test_fashion_is_found_in_the_system_location_when_the_data_root_has_none(tmp_path, system_fashion):
    _, images, labels = system_fashion
    ds = load_dataset("fashion", root=tmp_path / "empty-root")
    assert np.array_equal(ds.images[:, 0].numpy(), images) and np.array_equal(ds.labels.numpy(), labels)
    assert ds.classes[0] == "T-shirt/top"


def test_the_data_root_comes_first(tmp_path, system_fashion):
    own, _ = fake_mnist(tmp_path / "root" / "fashion", n=12, gz=False, seed=3)   # the same data, uncompressed
    assert np.array_equal(load_dataset("fashion", root=tmp_path / "root").images[:, 0].numpy(), own)


def test_recompressed_files_pass_and_altered_ones_are_refused(tmp_path, system_fashion):
    system, _, _ = system_fashion
    root = tmp_path / "root" / "fashion"
    root.mkdir(parents=True)
    for p in system.glob("*.gz"):                                # the same bytes, compressed differently
        (root / p.name).write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1))
    assert len(load_dataset("fashion", root=tmp_path / "root")) == 12
    raw = bytearray(gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes()))
    raw[100] ^= 0xFF                                             # one pixel altered
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="contents are not the data set's"):
        load_dataset("fashion", root=tmp_path / "root")


def test_no_files_anywhere_names_both_remedies(tmp_path, monkeypatch):
    source = dataclasses.replace(registry.REGISTRY["fashion"], system=[str(tmp_path / "not-installed")])
    monkeypatch.setitem(registry.REGISTRY, "fashion", source)
    with pytest.raises(DataError) as e:
        load_dataset("fashion", root=tmp_path)
    assert "--download" in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)


def test_download_keeps_files_with_the_right_contents_whatever_their_compression(tmp_path, system_fashion):
    """Debian's recompressed .gz files have other MD5s than the published ones: --download keeps
    them (their contents match) instead of fetching (here from an address that answers nothing)."""
    system, _, _ = system_fashion
    root = tmp_path / "root"
    (root / "fashion").mkdir(parents=True)
    for p in system.glob("*.gz"):
        (root / "fashion" / p.name).write_bytes(p.read_bytes())
    assert download("fashion", root, mirrors=["http://127.0.0.1:9/"]) == root / "fashion"


def test_the_registry_checksums_match_the_package_where_it_is_installed():
    """Where Debian's package is installed (not needed by the suite), its files pass as they are."""
    folder = registry.REGISTRY["fashion"].system[0]
    import os
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} not installed (apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion", "test", root="/nonexistent")
    assert len(ds) == 10_000 and ds.shape == (1, 28, 28)
