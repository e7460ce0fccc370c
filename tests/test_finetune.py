"""Fine-tuning (`--init-from CKPT`): weights from another run, classes matched by name, a fresh
optimizer, and an EMA that starts from the loaded weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train_ddpm
import train_gan
from minigen.models.unet import UNet, preset
from minigen.training.checkpoint import load_checkpoint
from minigen.training.ema import EMA
from minigen.training.finetune import init_from, restart_ema

TINY = ["--preset", "tiny", "--batch-size", "4", "--sample-every", "0", "--sample-steps", "2", "--warmup", "1"]


def folder(root: Path, classes: dict[str, int], n: int = 8) -> str:
    """n 28x28 gray images per class, each class its own gray level."""
    for name, level in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((28, 28), level, np.uint8)).save(root / name / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    data = folder(root / "old", {"dark": 40, "light": 220})
    out = root / "old-run"
    assert train_ddpm.run(train_ddpm.main, [*TINY, "--dataset", data, "--image-size", "28", "--channels", "1",
                                            "--steps", "3", "--out", str(out)]) == 0
    return root, out / "last.pt"


def test_classes_are_matched_by_name_and_the_null_row_kept(pretrained, capsys):
    root, ckpt = pretrained
    data = folder(root / "new", {"dark": 40, "light": 220, "mid": 128})       # one class more, sorted: dark, light, mid
    out = root / "new-run"
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--dataset", data, "--image-size", "28", "--channels", "1",
                                            "--steps", "1", "--lr", "1e-12", "--seed", "1", "--init-from", str(ckpt),
                                            "--out", str(out)])
    assert code == 0
    assert "classes kept 2, new 1 (fresh rows), dropped 0" in capsys.readouterr().out
    old, new = load_checkpoint(ckpt), load_checkpoint(out / "last.pt")
    before, after = old["ema"]["model"]["label_emb.weight"], new["model"]["label_emb.weight"]   # (K + 1, D)
    assert torch.allclose(after[:2], before[:2], atol=1e-6)            # dark, light: their rows (lr ≈ 0)
    assert torch.allclose(after[3], before[2], atol=1e-6)              # the null label's row, now at K = 3
    assert not any(torch.allclose(after[2], row, atol=1e-3) for row in before)   # mid: a fresh row (seed 1)
    assert new["extra"]["init_from"]["step"] == 3 and new["extra"]["init_from"]["classes"] == ["dark", "light"]
    assert new["optimizer"]["state"][0]["step"].item() == 1              # a fresh optimizer


def test_the_ema_starts_from_the_loaded_weights_and_moves_with_training(pretrained):
    _, ckpt = pretrained
    model = UNet(preset("tiny", num_classes=2))
    ema = EMA(model, max_decay=0.999)
    init_from(ckpt, "ddpm", {"model": model}, ["dark", "light"])
    restart_ema(ema, model)
    loaded = load_checkpoint(ckpt)["ema"]["model"]
    for k, v in ema.model.state_dict().items():
        assert torch.equal(v, loaded[k]), k                             # not the random initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)                                                  # "training" moves the weights
    ema.update(model)                                                    # decay 0 at the restarted step 0
    assert torch.equal(ema.model.time_mlp[0].weight, model.time_mlp[0].weight)


def test_a_checkpoint_of_another_size_or_kind_is_one_line(pretrained, capsys):
    root, ckpt = pretrained
    data = folder(root / "old", {"dark": 40, "light": 220})
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--dataset", data, "--image-size", "16", "--channels", "1",
                                            "--steps", "1", "--init-from", str(ckpt), "--out", str(root / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "image channels, size and --preset must match" in err and err.strip().count("\n") == 0
    code = train_gan.run(train_gan.main, ["--preset", "tiny", "--dataset", data, "--image-size", "28", "--channels", "1",
                                          "--steps", "1", "--init-from", str(ckpt), "--out", str(root / "y")])
    assert code == 2 and "a 'ddpm' checkpoint, not a 'gan' one" in capsys.readouterr().err


def test_fine_tuning_on_one_class_keeps_the_whole_class_list(pretrained, capsys):
    """--only-classes mid --max-images 5: five images of one class, yet a model with a row for
    each of the data set's three classes (so the old classes can still be sampled)."""
    root, ckpt = pretrained
    data = folder(root / "new", {"dark": 40, "light": 220, "mid": 128})
    out = root / "one-class"
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--dataset", data, "--image-size", "28", "--channels", "1",
                                            "--only-classes", "MID", "--max-images", "5", "--steps", "1",
                                            "--init-from", str(ckpt), "--out", str(out)])
    assert code == 0
    said = capsys.readouterr().out
    assert "5 images of 1x28x28, 3 classes" in said and "classes kept 2, new 1" in said
    assert load_checkpoint(out / "last.pt")["extra"]["classes"] == ["dark", "light", "mid"]
