"""Measuring generative models: quality, coverage (diversity) and speed.

Papers:
    Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule, arXiv:1706.08500 (Fréchet
        distance between Gaussians fitted to features: FID when the features are Inception's)
    Kynkäänniemi et al. 2019, Improved Precision and Recall Metric, arXiv:1904.06991
    Salimans et al. 2016, Improved Techniques for Training GANs, arXiv:1606.03498 (Inception Score)
    Ravuri & Vinyals 2019, Classification Accuracy Score, arXiv:1905.10887
    Xiao, Kreis & Vahdat 2022, Tackling the Generative Learning Trilemma, arXiv:2112.07804
    Radford et al. 2021, CLIP, arXiv:2103.00020, §3.1 (zero-shot classification by captions)
    Hessel et al. 2021, CLIPScore, arXiv:2104.08718, Eq. 1 (2.5·max(cos, 0))

minigen's judge is its own tiny ViT trained on the real data (Inception weights cannot be
downloaded here), so the numbers are comparable between minigen's models on the same data,
not with published FIDs.
"""

import math

import torch
import torch.nn.functional as F


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by its eigendecomposition,
    A = V·diag(λ)·Vᵀ -> V·diag(√max(λ, 0))·Vᵀ (tiny negative eigenvalues from rounding clamped)."""
    eigenvalues, vectors = torch.linalg.eigh((a + a.T) / 2)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½)   (Heusel et al. 2017, after Dowson & Landau 1982).

    Tr (Σ₁Σ₂)^½ is computed as Tr (Σ₁^½·Σ₂·Σ₁^½)^½: the same eigenvalues, but the inner matrix is
    symmetric PSD, so float64 eigendecompositions replace scipy's general sqrtm, and the result
    is real without discarding an imaginary part."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt).item()


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def frechet_distance_of(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), (M, D)."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def _kth_neighbour_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    d = torch.cdist(features, features)                            # (N, N), zero diagonal
    return d.kthvalue(k + 1, dim=1).values                         # k+1: the 0 to itself comes first


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: approximate each set's manifold by the union of balls around its
    points, each reaching to the point's k-th nearest neighbour.
        precision = share of fake points inside the real manifold   (quality)
        recall    = share of real points inside the fake manifold   (coverage)"""
    real, fake = real.double(), fake.double()
    real_radius, fake_radius = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = torch.cdist(fake, real)                                     # (M, N)
    precision = (d <= real_radius[None, :]).any(dim=1).double().mean().item()
    recall = (d.T <= fake_radius[None, :]).any(dim=1).double().mean().item()
    return precision, recall


def inception_score(probs: torch.Tensor) -> float:
    """IS = exp(E_x KL(p(y|x) ‖ p(y)))   (Salimans et al. 2016): high when each image is
    confidently one class (quality) and the classes are evenly used (diversity); at most K."""
    p = probs.double().clamp(min=1e-12)
    marginal = p.mean(0, keepdim=True)
    return math.exp((p * (p.log() - marginal.log())).sum(1).mean().item())


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images the classifier puts in the requested class (does a "7" come out a 7?)."""
    return (logits.argmax(1) == labels).double().mean().item()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio, 10·log10(range² / MSE), in dB; range 2 for images in [-1, 1]."""
    mse = (x.double() - y.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004, Eq. 13) with their Gaussian window (11, σ = 1.5),
    K1 = 0.01, K2 = 0.03, averaged over positions, channels and images; x, y: (B, C, H, W):
        SSIM = (2μ_xμ_y + C1)(2σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),  C_i = (K_i·L)²"""
    x, y = x.double(), y.double()
    C = x.shape[1]
    half = window // 2
    t = torch.arange(window, dtype=torch.float64) - half
    g = torch.exp(-t**2 / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(C, 1, window, window)       # one window per channel

    def blur(z):
        return torch.nn.functional.conv2d(z, kernel, groups=C)              # "valid" positions only

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean().item()


# ---- residual noise: speckles ---------------------------------------------------------------

def speckles(x: torch.Tensor, threshold: float = 0.1, flat: float = 0.1, data_range: float = 2.0) -> torch.Tensor:
    """Speckles per image: pixels of a flat region that stand out from it. x: (B, C, H, W) -> (B,).

    The 3×3 median filter removes isolated pixels and keeps edges, so its output m is the image
    without speckles. A pixel is in a flat region when m varies by less than `flat` of the data
    range over the 5×5 window around it (away from every edge), and is a speckle when it differs
    from m by more than `threshold` of the range (in any channel). Of 2,000 real glyphs, 99% have
    none (the most has 3); 99% of Fashion-MNIST's have at most about 17 (woven and printed texture);
    residual sampling noise on a plain background lights many. Borders are padded by replication."""
    B, C, H, W = x.shape
    x = x.float()
    windows = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3).reshape(B, C, 9, H, W)
    m = windows.median(dim=2).values                                    # (B, C, H, W) median-filtered
    local_range = F.max_pool2d(m, 5, 1, 2) + F.max_pool2d(-m, 5, 1, 2)  # max − min over 5×5
    in_flat = local_range < flat * data_range
    outlier = ((x - m).abs() > threshold * data_range) & in_flat
    return outlier.any(dim=1).flatten(1).sum(1)


def speckle_limit(real: torch.Tensor, quantile: float = 0.99, **speckle_kw) -> float:
    """The speckle count that `quantile` of the real images stay within (glyphs: 0)."""
    return torch.quantile(speckles(real, **speckle_kw).double(), quantile).item()


def grainy_fraction(samples: torch.Tensor, limit: float, **speckle_kw) -> float:
    """Share of samples with more speckles than `limit` (speckle_limit of real images: real
    images from the same data then score at most 1 − quantile)."""
    return (speckles(samples, **speckle_kw) > limit).double().mean().item()


# ---- words and pictures: with minigen's own CLIP (models/clip.py) -------------------------------

def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor, w: float = 2.5) -> float:
    """CLIPScore = w·max(cos(I, T), 0), averaged over pairs (Hessel et al. 2021, Eq. 1, w = 2.5):
    how well each image matches its own caption. Rows of I and T are paired; any length."""
    cos = F.cosine_similarity(image_emb, text_emb, dim=-1)
    return (w * cos.clamp(min=0)).mean().item()


def zero_shot_attributes(image_emb: torch.Tensor, text_emb: torch.Tensor, text_attributes: torch.Tensor,
                         scale: float = 100.0) -> torch.Tensor:
    """Each image's attributes read off by captions (Radford et al. §3.1, for several attributes
    at once): p(caption | image) = softmax(scale·I·Tᵀ) over M captions that between them name every
    combination of attribute values; then for each attribute the value whose captions gather the
    most probability, p(v | image) = Σ_{captions naming v} p(caption | image).
    image_emb (N, E), text_emb (M, E), text_attributes (M, A) -> predicted attributes (N, A)."""
    p = torch.softmax(scale * image_emb @ text_emb.T, dim=1)                         # (N, M)
    out = []
    for a in range(text_attributes.shape[1]):
        values = int(text_attributes[:, a].max()) + 1
        one_hot = F.one_hot(text_attributes[:, a], values).to(p.dtype)             # (M, V)
        out.append((p @ one_hot).argmax(1))                                        # (N,)
    return torch.stack(out, dim=1)


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, image_keys: torch.Tensor,
                     text_keys: torch.Tensor, k: int) -> tuple[float, float]:
    """Recall@k both ways, for pairs that may repeat: image i's retrieval is right when one of
    its k most similar captions describes what i shows (text_keys equal image_keys[i], e.g. the
    same attributes); caption j's when one of its k most similar images does.
    Returns (image -> text, text -> image)."""
    sim = image_emb @ text_emb.T                                                      # (N, M)
    same = (image_keys[:, None] == text_keys[None]).reshape(len(image_keys), len(text_keys), -1).all(-1)  # (N, M)
    k_t, k_i = min(k, sim.shape[1]), min(k, sim.shape[0])
    i2t = same.gather(1, sim.topk(k_t, dim=1).indices).any(1).float().mean().item()
    t2i = same.T.gather(1, sim.T.topk(k_i, dim=1).indices).any(1).float().mean().item()
    return i2t, t2i
