"""Samples other tools can read: sample.py --save-npz / --save-dir, and evaluate.py --samples."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import sample

OLD = Path(__file__).resolve().parent / "data" / "before_refactor"


def test_npz_and_pngs_hold_the_same_pixels_in_the_common_layout(tmp_path):
    args = ["--ckpt", str(OLD / "ddpm.pt"), "--steps", "2", "-n", "20", "--no-progress", "--out", str(tmp_path / "g.png"),
            "--save-npz", str(tmp_path / "s.npz"), "--save-dir", str(tmp_path / "pngs")]
    assert sample.run(sample.main, args) == 0
    with np.load(tmp_path / "s.npz") as f:
        images, labels = f["images"], f["labels"]
    assert images.dtype == np.uint8 and images.shape == (20, 28, 28, 1)          # (N, H, W, C)
    assert labels.tolist() == [k for k in range(10) for _ in range(2)]            # a row per class, 2 each
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(pngs) == 20 and pngs[3].name == "00003_1.png"
    assert np.array_equal(np.asarray(Image.open(pngs[3])), images[3, :, :, 0])


def test_evaluate_judges_sample_files_with_and_without_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labelled.npz", images=rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8),
             labels=np.arange(12) % 10)
    np.savez(tmp_path / "unlabelled.npz", images=rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8))
    args = ["--judge", str(OLD / "vit.pt"), "-n", "12", "--cas-steps", "1", "--out", str(tmp_path / "eval"),
            "--samples", str(tmp_path / "labelled.npz"), "--samples", str(tmp_path / "unlabelled.npz")]
    assert evaluate.run(evaluate.main, args) == 0
    table = (tmp_path / "eval" / "trilemma.md").read_text().splitlines()
    row = next(line for line in table if "unlabelled.npz" in line).split("|")
    assert row[6].strip() == "-" and row[8].strip() == "-"                         # no accuracy, no CAS
    assert any("labelled.npz" in line and line.split("|")[6].strip() != "-" for line in table)


@pytest.mark.parametrize("arrays,message", [
    ({"images": np.zeros((12, 28, 28, 1), np.float32)}, "must be uint8"),
    ({"images": np.zeros((12, 32, 32, 3), np.uint8)}, "images of 3x32x32"),
    ({"images": np.zeros((12, 28, 28, 1), np.uint8), "labels": np.full(12, 10)}, "labels outside"),
    ({"pictures": np.zeros((12, 28, 28, 1), np.uint8)}, "not a samples file"),
])
def test_a_bad_samples_file_is_one_line(tmp_path, capsys, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert evaluate.run(evaluate.main, ["--judge", str(OLD / "vit.pt"), "--samples", str(tmp_path / "bad.npz"),
                                        "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_evaluate_measures_chosen_classes_against_their_real_images(tmp_path):
    """--only-classes 3: the floor row is the judge on the first real test images of class 3
    (derived here independently), and with one class there is no CAS."""
    import json

    import torch

    from minigen import pipelines
    from minigen.data import train_and_test
    args = ["--judge", str(OLD / "vit.pt"), "--ddpm", str(OLD / "ddpm.pt"), "--only-classes", "3", "-n", "10",
            "--ddpm-steps", "0", "--ddim-steps", "1", "--guidance", "1", "--out", str(tmp_path / "eval")]
    assert evaluate.run(evaluate.main, args) == 0
    rows = json.loads((tmp_path / "eval" / "trilemma.json").read_text())["rows"]
    judge = pipelines.load(OLD / "vit.pt", kind="vit")
    _, test = train_and_test(judge.data["dataset"], size=judge.data["image_size"], channels=judge.data["channels"])
    threes = test.images[test.labels == 3][:10].float() / 127.5 - 1
    with torch.no_grad():
        expected = (judge.network(threes).argmax(1) == 3).double().mean().item()
    assert rows[0]["n"] == 10 and rows[0]["accuracy"] == expected
    assert all(row["CAS"] is None for row in rows)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    """The rename that ends every atomic write fails as on a full disk (ENOSPC): sample.py says so
    in one line, exit status 2, and no half-written .tmp file stays beside the output."""
    import errno
    import os

    from minigen import images

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(images.os, "replace", full)
    args = ["--ckpt", str(OLD / "ddpm.pt"), "--steps", "1", "-n", "2", "--no-progress", "--out", str(tmp_path / "g.png")]
    assert sample.run(sample.main, args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write it (No space left on device)" in err
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "g.png").exists()


def test_save_npz_naming_a_folder_is_refused_before_sampling(tmp_path, capsys):
    (tmp_path / "dir.npz").mkdir()
    args = ["--ckpt", str(OLD / "ddpm.pt"), "--no-progress", "--out", str(tmp_path / "g.png"),
            "--save-npz", str(tmp_path / "dir.npz")]
    assert sample.run(sample.main, args) == 2
    out = capsys.readouterr()
    assert "(not a folder)" in out.err and "device:" not in out.out


def test_the_png_holds_the_command_that_makes_it_again(tmp_path):
    """sample.py writes its command line into the grid's PNG (text chunk "minigen"); run again
    (into another file) it gives the same pixels."""
    import shlex
    args = ["--ckpt", str(OLD / "ddpm.pt"), "--steps", "2", "-n", "4", "--class", "3", "--seed", "7", "--no-progress",
            "--out", str(tmp_path / "a.png")]
    assert sample.run(sample.main, args) == 0
    made_by = shlex.split(Image.open(tmp_path / "a.png").text["minigen"])
    assert made_by[:2] == ["python", "sample.py"] and made_by[2:] == args
    again = made_by[2:-1] + [str(tmp_path / "b.png")]
    assert sample.run(sample.main, again) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
