"""train_ddpm.py and sample.py end to end on the tiny preset: outputs, resume, errors, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import train_ddpm
from minigen.models.unet import preset
from minigen.training.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--batch-size", "16", "--sample-steps", "3", "--log-every", "2", "--warmup", "2"]


def run(script: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the sampling tests."""
    out = tmp_path_factory.mktemp("ddpm")
    os.environ.setdefault("MINIGEN_CACHE", str(tmp_path_factory.getbasetemp() / "minigen-cache"))
    r = run("train_ddpm.py", *TINY, "--steps", "6", "--sample-every", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


def test_training_writes_checkpoint_log_and_pictures(trained):
    out, r = trained
    assert "0.19M parameters" in r.stdout and "GFLOP per 28x28 image forward" in r.stdout
    for name in ("last.pt", "metrics.jsonl", "forward.png", "samples.png", "reverse.png",
                 "samples/step_000003.png", "strips/step_000003.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and all("images_per_s" in r and "lr" in r for r in rows)
    state = load_checkpoint(out / "last.pt", kind="ddpm")
    assert state["step"] == 6 and state["config"]["base_channels"] == 16
    assert not any(k.startswith("_orig_mod.") for k in state["model"])


@pytest.mark.parametrize("sampler,steps", [("ddim", "4"), ("ddpm", "5")])
def test_sample_py_with_both_samplers_is_reproducible(trained, tmp_path, sampler, steps):
    out, _ = trained
    args = ["--ckpt", str(out / "last.pt"), "--sampler", sampler, "--steps", steps, "--no-progress", "-n", "20"]
    a = run("sample.py", *args, "--out", str(tmp_path / "a.png"), "--strip", "--gif")
    b = run("sample.py", *args, "--out", str(tmp_path / "b.png"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "images/s" in a.stdout
    assert (tmp_path / "a_strip.png").is_file() and Image.open(tmp_path / "a.gif").n_frames == int(steps)
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()


def test_sample_py_one_class_and_negative_class(trained, tmp_path):
    out, _ = trained
    r = run("sample.py", "--ckpt", str(out / "last.pt"), "--class", "7", "--negative-class", "1",
            "-n", "4", "--steps", "2", "--no-progress", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    bad = run("sample.py", "--ckpt", str(out / "last.pt"), "--class", "12", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "classes 0..9" in bad.stderr


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_sample_py_refuses_bad_checkpoints_in_one_line(tmp_path, capsys):
    """In this process (as the bad-input table runs every script): sample.py's main, its exit
    status and its one line on stderr."""
    import sample
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    torch.save({"format": 1, "kind": "ddpm", "x": _Evil()}, tmp_path / "evil.pt")
    cfg = preset("tiny")
    save_checkpoint(tmp_path / "vit.pt", kind="vit", config=cfg, model=torch.nn.Linear(1, 1), step=0)
    save_checkpoint(tmp_path / "gan.pt", kind="gan", config=cfg, model=torch.nn.Linear(1, 1), step=0)
    expected = {"missing.pt": "no such checkpoint", "corrupt.pt": "corrupt or truncated",
                "evil.pt": "could run code", "vit.pt": "a 'vit' checkpoint, not a 'ddpm' or 'gan' one",
                "gan.pt": "does not match this minigen's gan model"}
    for name, message in expected.items():
        assert sample.run(sample.main, ["--ckpt", str(tmp_path / name), "--out", str(tmp_path / "x.png")]) == 2, name
        r = capsys.readouterr()
        assert message in r.err and r.err.strip().count("\n") == 0, r.err
        assert "this must never run" not in r.out


def test_resume_reaches_the_same_weights_bit_for_bit(tmp_path):
    """6 steps straight, or 3 steps, stop, and resume to 6 in a fresh process: identical model and EMA."""
    common = [*TINY, "--steps", "6", "--sample-every", "0", "--ckpt-every", "2"]
    assert train_ddpm.run(train_ddpm.main, [*common, "--out", str(tmp_path / "a")]) == 0
    assert train_ddpm.run(train_ddpm.main, [*common, "--stop-after", "3", "--out", str(tmp_path / "b")]) == 0
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    second = run("train_ddpm.py", *common, "--resume", "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 6
    for part in ("model",):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path, trained):
    out, _ = trained
    r = run("train_ddpm.py", *TINY, "--steps", "2", "--out", str(out))
    assert r.returncode == 2 and "pass --resume" in r.stderr
    r = run("train_ddpm.py", *TINY, "--resume", "--out", str(tmp_path / "none"))
    assert r.returncode == 2 and "no such checkpoint" in r.stderr


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from minigen.diffusion import Diffusion
    real_loss = Diffusion.loss
    calls = {"n": 0}

    def loss_that_breaks(self, *args, **kwargs):
        calls["n"] += 1
        value = real_loss(self, *args, **kwargs)
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr(Diffusion, "loss", loss_that_breaks)
    out = tmp_path / "run"
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--steps", "6", "--ckpt-every", "2", "--sample-every", "0",
                                            "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "loss became nan at step 3" in err
    assert load_checkpoint(out / "last.pt")["step"] == 2


def test_a_diverged_run_stops_with_its_last_good_checkpoint(tmp_path, capsys):
    """An absurd learning rate: the first step's loss is ordinary, the second's is over 1,000 times
    larger (still finite). The run stops there, exit status 2, saying it diverged; the
    checkpoint of step 1 stays, with finite weights."""
    out = tmp_path / "run"
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--steps", "20", "--warmup", "0", "--lr", "1000", "--ckpt-every", "1",
                                            "--log-every", "1", "--sample-every", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "the run diverged" in err and "at step 1 " in err, err
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_ctrl_c_finishes_the_step_saves_and_exits_cleanly(tmp_path, monkeypatch, capsys):
    """A real SIGINT arriving in the middle of step 3 (during the EMA update): step 3 completes,
    its checkpoint is saved, and the run ends with status 130."""
    import signal

    import minigen.training.ema
    real_update = minigen.training.ema.EMA.update
    calls = {"n": 0}

    def interrupted(self, model):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        real_update(self, model)

    monkeypatch.setattr(minigen.training.ema.EMA, "update", interrupted)
    out = tmp_path / "run"
    code = train_ddpm.main([*TINY, "--steps", "6", "--sample-every", "0", "--out", str(out)])
    assert code == 130
    assert "stopped at step 3" in capsys.readouterr().out
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3 and state["ema"]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_dropout_flag_reaches_the_saved_config_and_bad_values_fail_in_one_line(tmp_path, capsys):
    assert preset("tiny").dropout == 0.0                  # so 0.3 below can only come from the flag
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--dropout", "0.3", "--steps", "1", "--sample-every", "0",
                                            "--out", str(tmp_path / "a")])
    assert code == 0
    assert load_checkpoint(tmp_path / "a" / "last.pt")["config"]["dropout"] == 0.3
    code = train_ddpm.run(train_ddpm.main, [*TINY, "--dropout", "1.5", "--steps", "1", "--out", str(tmp_path / "b")])
    assert code == 2 and "--dropout: 1.5: must be in [0, 1)" in capsys.readouterr().err


def test_a_resumed_run_keeps_its_steps_unless_told_and_says_when_told(tmp_path, capsys):
    """--steps 4 stopped at 2, then only --resume: the run ends at its own 4 (not the default
    1,200, which would also stretch its learning-rate schedule); a --steps given on resume is a
    change, and it is said."""
    out = tmp_path / "run"
    common = [*TINY, "--sample-every", "0", "--out", str(out)]
    assert train_ddpm.run(train_ddpm.main, [*common, "--steps", "4", "--stop-after", "2"]) == 0
    assert train_ddpm.run(train_ddpm.main, [*common, "--resume"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 4
    capsys.readouterr()
    assert train_ddpm.run(train_ddpm.main, [*common, "--resume", "--steps", "6"]) == 0
    assert "--steps 6: changed from the run's 4" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["step"] == 6
