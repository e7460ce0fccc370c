"""The run lifecycle every training script shares (minigen/training/lifecycle.py): resume bit for
bit, refusing to overwrite a run, and two-process DistributedDataParallel on the CPU."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigen.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "train_ddpm.py": ["--preset", "tiny", "--batch-size", "8", "--sample-steps", "2", "--sample-every", "0"],
    "train_gan.py": ["--preset", "tiny", "--batch-size", "8", "--sample-every", "0"],
    "train_vit.py": ["--preset", "tiny", "--batch-size", "8", "--eval-every", "0"],
}


def run(*args, one_thread=True) -> subprocess.CompletedProcess:
    """A fresh Python process; one thread each (for two-process runs), or as many as this one has."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None)


@pytest.mark.parametrize("script", ["train_gan.py", "train_vit.py"])
def test_stop_after_and_resume_reach_the_same_weights_bit_for_bit(tmp_path, script, capsys):
    """4 steps straight, or 2 steps, stop, and resume to 4 in a fresh process: identical weights
    (train_ddpm.py's own test does the same with the EMA)."""
    module = importlib.import_module(script.removesuffix(".py"))
    common = [*TINY[script], "--steps", "4", "--log-every", "1"]
    assert module.run(module.main, [*common, "--out", str(tmp_path / "a")]) == 0
    assert module.run(module.main, [*common, "--stop-after", "2", "--out", str(tmp_path / "b")]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    second = run(str(ROOT / script), *common, "--resume", "--out", str(tmp_path / "b"), one_thread=False)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming" in second.stdout
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in (a.get("others") or {}).get("discriminator", {}).items():    # the GAN's D too
        assert torch.equal(v, b["others"]["discriminator"][k]), k
    assert module.run(module.main, [*common, "--out", str(tmp_path / "b")]) == 2   # a finished run is not overwritten
    assert "pass --resume" in capsys.readouterr().err


# One network (train_ddpm.py; train_vit.py shards its batches the same way, through the same
# Run.rank and Run.world) and two (train_gan.py): two processes each, so the CPU suite keeps to
# its time.
@pytest.mark.parametrize("script", ["train_ddpm.py", "train_gan.py"])
def test_two_process_ddp_training_on_cpu(tmp_path, script):
    out = tmp_path / "ddp"
    r = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / script),
            *TINY[script], "--steps", "3", "--log-every", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 processes (gloo)" in r.stdout
    assert r.stdout.count("model:") == 1                        # only rank 0 speaks and writes
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 + (script == "train_vit.py")
