"""EMA, learning-rate schedule, metrics log, images, seeding and device choice."""

import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from minigen.device import pick_device, seed_everything
from minigen.images import save_gif, save_grid, save_strip
from minigen.progress import progress_bar
from minigen.training.ema import EMA
from minigen.training.lr import warmup_cosine
from minigen.training.runlog import MetricsLog, read_log


def test_ema_two_steps_by_hand():
    """power = 1, inv_gamma = 1: β_0 = 1 − 1/1 = 0, β_1 = 1 − 1/2 = ½.
    θ: 1 (init) -> 2 -> 4.  EMA: after step 0: 0·1 + 1·2 = 2; after step 1: ½·2 + ½·4 = 3."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, max_decay=0.999, inv_gamma=1.0, power=1.0)
    for value in (2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    assert ema.model.weight.item() == pytest.approx(3.0)
    assert ema.decay(0) == 0.0 and ema.decay(1) == 0.5 and ema.decay(10**9) == 0.999


def test_ema_decay_clamps_and_buffers_are_copied_not_averaged():
    """max_decay = 0.4 caps β_1 = ½ at 0.4: EMA = 0.4·2 + 0.6·4 = 3.2. BatchNorm's running
    statistics and batch counter are copied exactly."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = EMA(model, max_decay=0.4, inv_gamma=1.0, power=1.0)
    for value in (2.0, 4.0):
        with torch.no_grad():
            model[0].weight.fill_(value)
        model.train()(torch.tensor([[1.0], [3.0]]))      # updates running_mean and the counter
        ema.update(model)
    assert ema.model[0].weight.item() == pytest.approx(3.2)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert ema.model[1].num_batches_tracked.item() == 2


def test_warmup_then_cosine_values():
    """warmup 10, total 110: linear to 1 over 10 steps, cos half-way (step 60) = ½, end = 0."""
    f = lambda k: warmup_cosine(k, warmup=10, total=110)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)


def test_metrics_log_appends_json_lines_and_survives_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(1, loss=torch.tensor(0.5), lr=1e-3)
    log.write(2, loss=float("nan"), images_per_s=np.float32(10.0))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')                        # a run killed mid-write
    rows = read_log(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 0.5 and rows[1]["loss"] == "nan" and rows[1]["images_per_s"] == 10.0
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])


def test_grid_strip_and_gif_are_written_with_the_right_pixels(tmp_path):
    x = -torch.ones(6, 1, 4, 4)
    x[1] = 1.0                                           # the second tile is white
    path = save_grid(x, tmp_path / "grid.png", nrow=3, scale=2)
    img = np.asarray(Image.open(path).convert("L"))
    pad = 2
    # Tile (row 0, col 1) starts at x = pad + (4·2 + pad) = 12, y = pad.
    assert img[pad:pad + 8, 12:20].min() == 255 and img[pad:pad + 8, pad:pad + 8].max() == 0
    strip = Image.open(save_strip(torch.zeros(5, 3, 8, 8), tmp_path / "s.png", captions=[f"t={t}" for t in range(5)]))
    assert strip.width > 5 * 8 and strip.mode == "RGB"
    gif = Image.open(save_gif([torch.full((2, 1, 8, 8), v) for v in (-1.0, 0.0, 1.0)], tmp_path / "a.gif"))
    assert gif.n_frames == 3


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_device_choice_says_why():
    device, reason = pick_device()
    expected = "cuda" if torch.cuda.is_available() else device.type
    assert device.type == expected and reason.startswith(device.type)
    assert pick_device("cpu") == (torch.device("cpu"), "cpu: asked for with --device")


def test_data_cli_shows_a_grid_and_fails_in_one_line(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "minigen.data", "show", "glyphs", "-n", "20",
                         "--out", str(tmp_path / "g.png")], capture_output=True, text=True)
    assert ok.returncode == 0 and (tmp_path / "g.png").is_file(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "minigen.data", "show", f"folder:{tmp_path}/none", "--size", "8"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no such folder" in bad.stderr


def test_progress_bar_redraws_rarely_into_a_log_file_and_often_on_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log, terminal = io.StringIO(), Terminal()
    assert progress_bar(range(3), file=log).mininterval == 30.0
    assert progress_bar(range(3), file=terminal).mininterval == 0.1          # tqdm's own default
    assert progress_bar(range(3), file=log, mininterval=1.0).mininterval == 1.0   # an explicit choice stays
    assert list(progress_bar(range(3), file=log)) == [0, 1, 2]
