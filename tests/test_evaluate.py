"""train_vit.py and evaluate.py end to end on tiny checkpoints."""

import importlib
import json
from types import SimpleNamespace

from PIL import Image

from minigen.training.checkpoint import load_checkpoint


def test_train_vit_then_evaluate_the_trilemma(tmp_path, capsys):
    def run(script, *args):                  # the script's main, in this process (no second torch import)
        module = importlib.import_module(script.removesuffix(".py"))
        capsys.readouterr()
        assert module.run(module.main, list(args)) == 0, capsys.readouterr().err[-3000:]
        return SimpleNamespace(stdout=capsys.readouterr().out)

    r = run("train_vit.py", "--preset", "tiny", "--steps", "20", "--batch-size", "32", "--eval-every", "10",
            "--out", str(tmp_path / "vit"))
    assert "test accuracy" in r.stdout
    state = load_checkpoint(tmp_path / "vit" / "last.pt", kind="vit")
    assert 0 <= state["extra"]["test_accuracy"] <= 1
    attention = Image.open(tmp_path / "vit" / "attention.png")
    assert attention.width > 8 * 28
    run("train_gan.py", "--preset", "tiny", "--steps", "3", "--batch-size", "8", "--sample-every", "0",
        "--out", str(tmp_path / "gan"))
    run("train_ddpm.py", "--preset", "tiny", "--steps", "3", "--batch-size", "8", "--sample-every", "0",
        "--sample-steps", "2", "--out", str(tmp_path / "ddpm"))
    r = run("train_vae.py", "--preset", "tiny", "--steps", "3", "--batch-size", "8", "--max-images", "64",
            "--out", str(tmp_path / "vae"))
    assert "reconstruction PSNR" in r.stdout
    run("train_clip.py", "--dataset", "glyphs", "--preset", "tiny", "--patch-size", "7", "--steps", "3",
        "--batch-size", "8", "--max-images", "64", "--eval-every", "0", "--out", str(tmp_path / "clip"))
    r = run("evaluate.py", "--judge", str(tmp_path / "vit" / "last.pt"), "--gan", str(tmp_path / "gan" / "last.pt"),
            "--vae", str(tmp_path / "vae" / "last.pt"), "--clip", str(tmp_path / "clip" / "last.pt"),
            "--ddpm", str(tmp_path / "ddpm" / "last.pt"), "-n", "20", "--ddpm-steps", "3", "--ddim-steps", "2",
            "--dpm-steps", "2", "--guidance", "1,2", "--cas-steps", "3", "--out", str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "trilemma.json").read_text())
    names = [row["model"] for row in report["rows"]]
    assert names == ["real test images (floor)", "VAE reconstructions (ceiling)", "GAN", "VAE (prior samples)", "DDPM 3 steps, w=3", "DDIM 2 steps, w=1",
                     "DDIM 2 steps, w=2", "DPM-Solver++ 2 steps, w=1", "DPM-Solver++ 2 steps, w=2"]
    for row in report["rows"]:
        assert row["FD"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert 1 <= row["IS"] <= 10 + 1e-6
        assert (row["CAS"] is None) == (row["accuracy"] is None) == (row["model"] == "VAE (prior samples)")
        assert row["CAS"] is None or 0 <= row["CAS"] <= 1
        assert (row["CLIPScore"] is None) == (row["accuracy"] is None)      # scored against the class's caption
        assert row["CLIPScore"] is None or 0 <= row["CLIPScore"] <= 2.5
    assert report["rows"][2]["images_per_s"] > 0
    table = (tmp_path / "eval" / "trilemma.md").read_text()
    assert table.count("\n") == 2 + len(names) and "| GAN | 20 |" in table
