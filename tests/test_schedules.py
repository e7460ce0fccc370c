"""β schedules against published reference numbers and their defining properties."""

import math

import pytest
import torch

from minigen.diffusion.schedules import alpha_bar_and_snr, make_betas, plot_schedules, schedule_table


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_alpha_bar_is_strictly_decreasing_inside_zero_one(name):
    betas = make_betas(name, 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    alpha_bar, snr = alpha_bar_and_snr(betas)
    assert (alpha_bar > 0).all() and (alpha_bar < 1).all()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert (snr[1:] < snr[:-1]).all()


def test_linear_schedule_matches_ho_et_al_reference_values():
    """β = linspace(1e-4, 0.02, 1000): ᾱ_499 ≈ 7.8587e-2 and ᾱ_999 ≈ 4.0358e-5 (0-based)."""
    betas = make_betas("linear", 1000)
    assert betas[0].item() == 1e-4 and betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    alpha_bar, _ = alpha_bar_and_snr(betas)
    assert alpha_bar[499].item() == pytest.approx(7.8587e-2, rel=1e-4)
    assert alpha_bar[999].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_linear_schedule_is_not_silently_rescaled_for_other_T():
    """A T = 512 chain's linear schedule is exactly linspace(1e-4, 0.02, 512); rescaling is opt-in."""
    betas = make_betas("linear", 512)
    assert betas[0].item() == 1e-4 and betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    rescaled = make_betas("linear", 500, rescale=True)
    assert rescaled[0].item() == pytest.approx(2e-4) and rescaled[-1].item() == pytest.approx(0.04)


def test_cosine_schedule_matches_nichol_dhariwal_reference_values():
    """β_0 ≈ 4.1284e-5, β_499 ≈ 3.1459e-3; only β_999 hits the 0.999 clip."""
    betas = make_betas("cosine", 1000)
    assert betas[0].item() == pytest.approx(4.1284e-5, rel=1e-4)
    assert betas[499].item() == pytest.approx(3.1459e-3, rel=1e-4)
    assert betas[999].item() == 0.999
    assert (betas[:999] < 0.999).all()


def test_cosine_alpha_bar_follows_the_squared_cosine_where_unclipped():
    """ᾱ_t = f(t+1)/f(0), f(u) = cos²(((u/T + s)/(1 + s))·π/2), for every t before the clip."""
    T, s = 1000, 0.008
    alpha_bar, _ = alpha_bar_and_snr(make_betas("cosine", T))
    f = lambda u: math.cos(((u / T + s) / (1 + s)) * math.pi / 2) ** 2
    for t in (0, 1, 250, 500, 900, 998):
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_sigmoid_schedule_endpoints_and_midpoint():
    """β = sigmoid(linspace(−6, 6, T))·(β_end − β_start) + β_start; symmetric about the middle."""
    betas = make_betas("sigmoid", 1001)
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert betas[0].item() == pytest.approx(sig(-6) * (0.02 - 1e-4) + 1e-4, rel=1e-12)
    assert betas[500].item() == pytest.approx(0.5 * (0.02 - 1e-4) + 1e-4, rel=1e-12)
    assert betas[0].item() + betas[-1].item() == pytest.approx(0.02 + 1e-4, rel=1e-12)


def test_unknown_schedule_and_bad_T_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="positive"):
        make_betas("linear", 0)


def test_schedule_table_and_plot(tmp_path):
    table = schedule_table(1000, points=3)
    assert "linear" in table and "4.0358e-05" in table
    path = plot_schedules(str(tmp_path / "s.png"), T=100)
    assert path.stat().st_size > 1000
