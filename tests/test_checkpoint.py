"""Checkpoints: round trip, atomic save, refusal of pickled code, wrong kind or config."""

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from minigen.errors import CheckpointError
from minigen.training.checkpoint import check_config, load_checkpoint, restore, save_checkpoint
from minigen.training.ema import EMA
from minigen.training.lr import warmup_cosine


@dataclass
class NetConfig:
    width: int = 8
    depth: int = 2


def build(cfg: NetConfig) -> nn.Module:
    layers = [nn.Linear(4, cfg.width), nn.BatchNorm1d(cfg.width), nn.ReLU()]
    layers += [nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth - 1)] + [nn.Linear(cfg.width, 1)]
    return nn.Sequential(*layers)


def train_steps(model, opt, sched, ema, n, gen_seed=None):
    for _ in range(n):
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)


def make_run(cfg):
    torch.manual_seed(0)
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(warmup_cosine, warmup=3, total=20))
    return model, opt, sched, EMA(model, power=0.75)


def test_round_trip_resumes_bit_for_bit(tmp_path):
    """Save after 5 steps, restore into fresh objects, run 5 more: the same weights as 10 straight."""
    cfg = NetConfig()
    model, opt, sched, ema = make_run(cfg)
    train_steps(model, opt, sched, ema, 10)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt, sched, ema = make_run(cfg)
    train_steps(model, opt, sched, ema, 5)
    save_checkpoint(tmp_path / "last.pt", kind="toy", config=cfg, model=model, step=5,
                    ema=ema, optimizer=opt, scheduler=sched, extra={"note": "hello"})
    torch.randn(100)                                     # disturb the RNG: restore must undo this
    model2, opt2, sched2, ema2 = make_run(cfg)
    state = load_checkpoint(tmp_path / "last.pt", kind="toy")
    assert restore(state, model2, cfg, ema2, opt2, sched2) == 5
    assert state["extra"] == {"note": "hello"} and ema2.step == 5
    train_steps(model2, opt2, sched2, ema2, 5)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, straight[k]), k


def test_python_and_numpy_rng_states_are_restored(tmp_path):
    cfg = NetConfig()
    random.seed(1)
    np.random.seed(2)
    save_checkpoint(tmp_path / "c.pt", kind="toy", config=cfg, model=build(cfg), step=0)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore(load_checkpoint(tmp_path / "c.pt"), build(cfg), cfg)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_compiled_module_is_saved_without_orig_mod_prefix(tmp_path):
    cfg = NetConfig()
    model = build(cfg)
    compiled = torch.compile(model)                      # wrapping alone compiles nothing
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(tmp_path / "c.pt", kind="toy", config=cfg, model=compiled, step=0)
    keys = load_checkpoint(tmp_path / "c.pt")["model"].keys()
    assert keys == model.state_dict().keys()


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    cfg = NetConfig()
    path = tmp_path / "last.pt"
    save_checkpoint(path, kind="toy", config=cfg, model=build(cfg), step=1)
    before = path.read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, kind="toy", config=cfg, model=build(cfg), step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]     # no temporary file left
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


class _RunsCode:
    def __reduce__(self):
        return (open, (str(Path("/tmp") / "minigen-ckpt-pwned"), "w"))


def test_a_checkpoint_carrying_code_is_refused_not_run(tmp_path):
    marker = Path("/tmp/minigen-ckpt-pwned")
    marker.unlink(missing_ok=True)
    torch.save({"format": 1, "kind": "toy", "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_missing_corrupt_foreign_and_wrong_kind_checkpoints(tmp_path):
    cfg = NetConfig()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"this is not a zip file")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a minigen checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "gan.pt", kind="gan", config=cfg, model=build(cfg), step=0)
    with pytest.raises(CheckpointError, match="'gan' checkpoint, not a 'ddpm'"):
        load_checkpoint(tmp_path / "gan.pt", kind="ddpm")
    full = (tmp_path / "gan.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")


def test_loading_into_another_config_says_which_fields_differ(tmp_path):
    save_checkpoint(tmp_path / "c.pt", kind="toy", config=NetConfig(width=8), model=build(NetConfig()), step=0)
    state = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"width=8 \(model has 16\)"):
        check_config(state, NetConfig(width=16))
    with pytest.raises(CheckpointError, match=r"width=8 \(model has 16\)"):
        restore(state, build(NetConfig(width=16)), NetConfig(width=16))


def test_a_checkpoint_with_nan_weights_is_refused_in_one_line(tmp_path, capsys):
    """Weights past saving (a NaN in one tensor) would draw a black grid: refused on load, and
    sample.py says so in one line with exit status 2."""
    import sample
    from minigen import pipelines
    from minigen.errors import CheckpointError
    old = Path(__file__).resolve().parent / "data" / "before_refactor" / "ddpm.pt"
    state = torch.load(old, weights_only=True)
    name = next(k for k, v in state["ema"]["model"].items() if v.is_floating_point())
    state["ema"]["model"][name] = torch.full_like(state["ema"]["model"][name], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        pipelines.load(tmp_path / "nan.pt")
    assert sample.run(sample.main, ["--ckpt", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name})" in err and not (tmp_path / "s.png").exists()
