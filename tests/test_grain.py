"""The grain tool (python -m minigen.evaluation.grain) on a small checkpoint."""

import argparse
from pathlib import Path

import pytest

from minigen import pipelines
from minigen.data import load_dataset
from minigen.evaluation import grain

OLD = Path(__file__).resolve().parent / "data" / "before_refactor"


def test_x0_error_is_the_noise_error_amplified_by_sigma():
    """With ε-prediction x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, so x̂_0 − x_0 = −σ_t·(ε̂ − ε) exactly, with
    σ_t = √((1−ᾱ_t)/ᾱ_t): the table's two errors must differ by the factor σ_t² at every level."""
    pipe = pipelines.load(OLD / "ddpm.pt", kind="ddpm")
    test = load_dataset("glyphs", "test")
    rows = grain.denoising_table(pipe, test, limit=0, args=argparse.Namespace(n=16, seed=0))
    assert [t for t, *_ in rows] == list(grain.NOISE_LEVELS)
    for t, sigma, mse_x0, mse_eps, ratio, share in rows:
        assert mse_x0 == pytest.approx(sigma**2 * mse_eps, rel=1e-3)
        assert ratio > 0 and 0 <= share <= 1


def test_the_tool_prints_its_tables(capsys):
    assert grain.run(grain.main, ["--ckpt", str(OLD / "ddpm.pt"), "-n", "10", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "w = 1 (no guidance)" in out and "x̂_0 not clipped" in out and "t =  19" in out
