"""Metrics against closed forms and constructed point sets whose answers are known."""


import pytest
import torch

from minigen.evaluation.metrics import (
    accuracy,
    frechet_distance,
    frechet_distance_of,
    grainy_fraction,
    inception_score,
    precision_recall,
    speckle_limit,
    speckles,
)


def test_frechet_distance_of_one_dimensional_gaussians():
    """d²(N(m₁, s₁²), N(m₂, s₂²)) = (m₁ − m₂)² + (s₁ − s₂)²."""
    fd = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert fd == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2, abs=1e-9)


def test_frechet_distance_of_diagonal_covariances():
    """Σ₁ = diag(a), Σ₂ = diag(b): d² = ‖Δμ‖² + Σ_i (√a_i − √b_i)²."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected.item(), rel=1e-9)


def test_frechet_distance_of_commuting_covariances():
    """Σ₁ = Q·diag(a)·Qᵀ, Σ₂ = Q·diag(b)·Qᵀ share eigenvectors, so (Σ₁Σ₂)^½ = Q·diag(√(ab))·Qᵀ and
    d² = ‖Δμ‖² + Σ_i (√a_i − √b_i)², whatever the rotation Q."""
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    a = torch.rand(8, generator=g, dtype=torch.float64) * 3 + 0.01
    b = torch.rand(8, generator=g, dtype=torch.float64) * 3 + 0.01
    s1, s2 = Q @ torch.diag(a) @ Q.T, Q @ torch.diag(b) @ Q.T
    mu = torch.zeros(8, dtype=torch.float64)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(((a.sqrt() - b.sqrt()) ** 2).sum().item(), rel=1e-8)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_from_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(20000, 3, generator=g)
    fake = torch.randn(20000, 3, generator=g) * 2 + torch.tensor([1.0, 0.0, 0.0])
    # ‖Δμ‖² = 1; each of 3 dims contributes (1 − 2)² = 1.
    assert frechet_distance_of(real, fake) == pytest.approx(4.0, rel=0.05)


def test_precision_recall_on_constructed_sets():
    g = torch.Generator().manual_seed(3)
    cluster_a = torch.randn(300, 2, generator=g) * 0.1
    cluster_b = torch.randn(300, 2, generator=g) * 0.1 + torch.tensor([10.0, 0.0])
    real = torch.cat([cluster_a, cluster_b])
    # The same distribution: both near 1.
    same = torch.cat([torch.randn(300, 2, generator=g) * 0.1, torch.randn(300, 2, generator=g) * 0.1 + torch.tensor([10.0, 0.0])])
    p, r = precision_recall(real, same, k=3)
    assert p > 0.9 and r > 0.9
    # Mode dropping: fakes only in cluster a -> every fake is realistic, half the data is missed.
    dropped = torch.randn(600, 2, generator=g) * 0.1
    p, r = precision_recall(real, dropped, k=3)
    assert p > 0.9 and r == pytest.approx(0.5, abs=0.05)
    # Far away from everything: neither.
    p, r = precision_recall(real, torch.randn(600, 2, generator=g) * 0.1 + 100, k=3)
    assert p == 0 and r == 0


def test_inception_score_bounds():
    """Confident and evenly spread over K classes: IS = K. One class for all, or unsure of all: IS = 1."""
    K = 5
    one_hot = torch.eye(K).repeat(20, 1)
    assert inception_score(one_hot) == pytest.approx(K, rel=1e-6)
    assert inception_score(torch.eye(K)[[2] * 100]) == pytest.approx(1.0, rel=1e-6)
    assert inception_score(torch.full((100, K), 1 / K)) == pytest.approx(1.0, rel=1e-6)
    # Half the classes used, confidently: IS = K/2... exp(log 2) for two classes of equal share.
    two = torch.eye(K)[[0, 1] * 50]
    assert inception_score(two) == pytest.approx(2.0, rel=1e-6)


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def _drawing_with_dots(n_dots: int) -> torch.Tensor:
    """A 1×28×28 image on background −1: a filled 8×8 square (value 1) and n_dots single
    bright pixels on a grid of spacing 4, far from the square and from each other."""
    x = torch.full((1, 28, 28), -1.0)
    x[:, 2:10, 2:10] = 1.0
    spots = [(r, c) for r in range(14, 27, 4) for c in range(2, 27, 4)][:n_dots]
    for r, c in spots:
        x[:, r, c] = 1.0
    return x


def test_speckles_count_isolated_pixels_and_not_edges():
    """Each isolated pixel differs from its 3×3 median (the background) by the whole range: one
    speckle each. The square's edges and corners are not in a flat region (the median-filtered
    image changes within 2 pixels), so a clean drawing has none."""
    x = torch.stack([_drawing_with_dots(k) for k in (0, 1, 5, 20)])
    assert speckles(x).tolist() == [0, 1, 5, 20]
    faint = _drawing_with_dots(3) * 0.05 - 0.95          # dots 0.1 above the background: below 10% of the range
    assert speckles(faint[None]).tolist() == [0]


def test_grainy_fraction_against_real_images():
    """Real images all clean: the limit is 0 and any speckle makes a sample grainy; with a limit
    of 2, only the sample with 7 speckles is grainy."""
    real = torch.stack([_drawing_with_dots(0)] * 10)
    samples = torch.stack([_drawing_with_dots(k) for k in (0, 0, 0, 2, 7)])
    assert speckle_limit(real) == 0
    assert grainy_fraction(samples, speckle_limit(real)) == pytest.approx(2 / 5)
    assert grainy_fraction(samples, 2) == pytest.approx(1 / 5)
