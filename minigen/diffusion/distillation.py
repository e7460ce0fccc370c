"""Distillation: students that sample in few steps what their teacher samples in many.

Papers:
    Salimans & Ho 2022, Progressive Distillation for Fast Sampling of Diffusion Models,
        arXiv:2202.00512, Algorithm 2 and §4 (the target, v-parameterisation, truncated SNR weight)
    Song, Dhariwal, Chen & Sutskever 2023, Consistency Models, arXiv:2303.01469, Algorithm 2
        (consistency distillation, at the end of this file)

Progressive distillation: a student learns to take in one DDIM step what its teacher takes in two.

With α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t), one deterministic DDIM step from z_t to time s is
    z_s = α_s·x̂ + σ_s·(z_t − α_t·x̂)/σ_t       (Song et al. 2021, Eq. 12, η = 0; process.ddim_step_to)
The teacher takes two such steps, t -> t' -> t'', and lands on z_t''. The student must land on
the same point in one step from z_t, so its x̂ must solve z_t'' = α_t''·x̃ + (σ_t''/σ_t)(z_t − α_t·x̃):
    x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t)       (Algorithm 2, the target)
and the student learns it with the loss max(SNR_t, 1)·‖x̂_student − x̃‖², "truncated SNR"
weighting (§4): at high noise the x̂ error counts fully even though SNR → 0 there.

The student's N steps visit the timesteps `trailing(N)` then clean data (t = −1). The teacher's
2N-step grid `trailing(2N)` holds every one of them plus one point between each pair, so the
teacher's two steps t -> t' -> t'' are exactly two steps of the teacher sampling with 2N steps.

Timesteps here are tensors (one per image), with t = −1 meaning clean data (ᾱ = 1).
"""

import torch

from .process import Diffusion


def distillation_target(z_t, z_end, alpha_t, sigma_t, alpha_end, sigma_end):
    """x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t): the x̂ with which one DDIM
    step from z_t lands on the teacher's z_t''  (Salimans & Ho 2022, Algorithm 2)."""
    ratio = sigma_end / sigma_t
    return (z_end - ratio * z_t) / (alpha_end - ratio * alpha_t)


def student_steps(diffusion: Diffusion, N: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's N steps as (t, t', t'') each (N,): step i goes from t[i] to t''[i] and the
    teacher passes through t'[i]. From the teacher's grid trailing(2N) followed by −1 (clean)."""
    grid = torch.cat([diffusion.timesteps(2 * N, "trailing"), torch.tensor([-1])]).to(device)
    return grid[0:-1:2], grid[1::2], grid[2::2]


def teacher_two_steps(teacher, diffusion: Diffusion, z_t, t, t_mid, t_end, clip: bool = True, **cond):
    """The teacher's two DDIM steps z_t -> z_t' -> z_t'', as its sampler takes them (x̂_0
    clipped to [−1, 1] by default, as SamplerConfig does)."""
    def x0(z, at):
        out = teacher(z, at, **cond)
        x = diffusion.x0_eps_from_output(out, z, at)[0]
        return x.clamp(-1, 1) if clip else x
    z_mid = diffusion.ddim_step_to(z_t, x0(z_t, t), t, t_mid)
    return diffusion.ddim_step_to(z_mid, x0(z_mid, t_mid), t_mid, t_end)


def progressive_loss(student, teacher, diffusion: Diffusion, x0: torch.Tensor, N: int,
                     clip: bool = True, **cond) -> torch.Tensor:
    """Salimans & Ho's Algorithm 2 for one batch: a student step i ~ U{0..N−1} per image,
    z_t = α_t·x_0 + σ_t·ε, the teacher's two steps (no gradient), the target x̃, and
    max(SNR_t, 1)·‖x̂_student − x̃‖² averaged. No value is read on the host."""
    B = x0.shape[0]
    t_all, mid_all, end_all = student_steps(diffusion, N, x0.device)
    i = torch.randint(0, N, (B,), device=x0.device)
    t, t_mid, t_end = t_all[i], mid_all[i], end_all[i]
    a_t, s_t = diffusion.alpha_sigma(t, x0)
    z_t = a_t * x0 + s_t * torch.randn_like(x0)                           # q(z_t | x_0)
    with torch.no_grad():
        z_end = teacher_two_steps(teacher, diffusion, z_t, t, t_mid, t_end, clip, **cond)
        a_end, s_end = diffusion.alpha_sigma(t_end, x0)
        target = distillation_target(z_t, z_end, a_t, s_t, a_end, s_end)   # x̃
    x_student = diffusion.x0_eps_from_output(student(z_t, t, **cond), z_t, t)[0]
    weight = (a_t / s_t).pow(2).clamp(min=1).reshape(-1)                   # max(SNR_t, 1)
    per_image = (x_student.float() - target.float()).pow(2).flatten(1).mean(1)
    return (weight * per_image).mean()


# ---- consistency distillation ----------------------------------------------------------------
#
#   Song, Dhariwal, Chen & Sutskever 2023, Consistency Models, arXiv:2303.01469, Algorithm 2
#
# A consistency function maps any point of a probability-flow ODE trajectory to the trajectory's
# clean end: f(x_t, t) = x_0 for every t, with f(x, clean) = x (the boundary condition). Here f
# is the student's x̂_0, which meets the boundary at σ = 0 by construction (x̂_0 = α_t·x_t − σ_t·v̂
# with v-prediction, the skip and output scalings of Song et al. §3 in another form). The student
# learns that neighbouring points of one trajectory, x_{t_n} and the teacher's one DDIM step from
# it to t_{n+1}, map to the same x̂_0 under f_θ and under f_θ⁻, a slowly moving average of θ:
#     L = ‖f_θ(x_{t_n}, t_n) − f_θ⁻(x̂_{t_{n+1}}, t_{n+1})‖²                 (Algorithm 2, d = L2)
# On the step that reaches clean data (t_{n+1} = −1) the boundary condition gives the target:
# f_θ⁻(x̂, clean) = x̂, the teacher's x̂_0 itself.

def consistency_loss(student, target, teacher, diffusion: Diffusion, x0: torch.Tensor, N: int,
                     clip: bool = True, **cond) -> torch.Tensor:
    """Song et al.'s Algorithm 2 for one batch, on the N-step grid trailing(N) then clean:
    n ~ U{0..N−1} per image, x_{t_n} = α·x_0 + σ·ε, the teacher's DDIM step to t_{n+1} (no
    gradient), and ‖f_θ(x_{t_n}) − f_θ⁻(x̂_{t_{n+1}})‖² averaged. `clip` clips the teacher's and
    the target network's x̂_0 to [−1, 1], never the student's."""
    grid = torch.cat([diffusion.timesteps(N, "trailing"), torch.tensor([-1])]).to(x0.device)
    n = torch.randint(0, N, (x0.shape[0],), device=x0.device)
    t, t_next = grid[n], grid[n + 1]
    a_t, s_t = diffusion.alpha_sigma(t, x0)
    x_t = a_t * x0 + s_t * torch.randn_like(x0)                           # q(x_{t_n} | x_0)

    def f(network, x, at, clip_x0):                                       # the consistency function: x̂_0
        x0_hat = diffusion.x0_eps_from_output(network(x, at.clamp(min=0), **cond), x, at.clamp(min=0))[0]
        return x0_hat.clamp(-1, 1) if clip_x0 else x0_hat

    with torch.no_grad():                                                 # teacher and target: clipped, as sampled
        x_next = diffusion.ddim_step_to(x_t, f(teacher, x_t, t, clip), t, t_next)   # one step of the teacher's ODE solver
        clean = (t_next < 0).reshape(-1, *([1] * (x0.dim() - 1)))
        goal = torch.where(clean, x_next, f(target, x_next, t_next, clip))   # boundary: f(x, clean) = x
    # The student's x̂_0 is never clipped (Algorithm 2 has no clipping): where it overshoots [−1, 1],
    # a clamp would flatten the loss and zero its gradient, and those pixels could never be pulled back.
    return (f(student, x_t, t, False).float() - goal.float()).pow(2).flatten(1).mean(1).mean()
