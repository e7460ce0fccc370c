"""Walking between two latent vectors (GAN z, or a diffusion model's x_T).

Spherical linear interpolation (Shoemake 1985), as White 2016 (Sampling Generative Networks,
arXiv:1609.04468) recommends for Gaussian latents: a high-dimensional N(0, I) sample lies near
a sphere of radius √d, and the straight line between two of them passes well inside it, where
the generator has never seen a latent. slerp follows the sphere instead:

    θ = arccos(⟨z_0, z_1⟩ / (‖z_0‖·‖z_1‖))
    slerp(z_0, z_1; s) = sin((1 − s)·θ)/sin θ · z_0 + sin(s·θ)/sin θ · z_1
"""

import torch


def slerp(z0: torch.Tensor, z1: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Interpolate between two latents of any shape at the fractions s (S,): returns (S, *z0.shape)."""
    a, b = z0.flatten().double(), z1.flatten().double()
    cos = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    theta = torch.arccos(cos)
    s = s.double()[:, None]                                                # (S, 1)
    if theta.abs() < 1e-6:                                                 # (anti)parallel: fall back to a line
        out = (1 - s) * a + s * b
    else:
        out = (torch.sin((1 - s) * theta) * a + torch.sin(s * theta) * b) / torch.sin(theta)
    return out.to(z0.dtype).reshape(len(s), *z0.shape)                     # (S, d) -> (S, *shape)
