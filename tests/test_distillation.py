"""Progressive distillation (Salimans & Ho 2022): the target by hand, an exact student of an
analytic teacher, and a tiny distill.py run that checkpoints, resumes bit-exactly and samples."""

import math
from pathlib import Path

import torch

from minigen.diffusion import Denoiser, Diffusion, SamplerConfig
from minigen.diffusion.distillation import (consistency_loss, distillation_target, progressive_loss,
                                            student_steps, teacher_two_steps)
from minigen.diffusion.schedules import make_betas
from tests.test_samplers_analytic import SHAPE, analytic_model


def test_the_target_by_hand():
    """α_t = 0.6, σ_t = 0.8, α_t'' = 0.8, σ_t'' = 0.6, z_t = 1, z_t'' = 0.5:
    x̃ = (0.5 − 0.75·1)/(0.8 − 0.75·0.6) = −0.25/0.35 = −5/7; and a DDIM step from z_t with
    x̂ = −5/7 lands on 0.8·(−5/7) + 0.6·(1 + 0.6·5/7)/0.8 = −4/7 + 7.5/7 = 0.5 = z_t''."""
    x = distillation_target(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64),
                            0.6, 0.8, 0.8, 0.6)
    assert math.isclose(x.item(), -5 / 7, rel_tol=1e-12)
    assert math.isclose(0.8 * x.item() + 0.6 * (1 - 0.6 * x.item()) / 0.8, 0.5, rel_tol=1e-12)


def test_the_student_grid_is_every_other_point_of_the_teachers():
    d = Diffusion(make_betas("linear", 1000))
    t, t_mid, t_end = student_steps(d, 4)
    assert t.tolist() == d.timesteps(4).tolist() == [999, 749, 499, 249]
    assert t_mid.tolist() == d.timesteps(8).tolist()[1::2] == [874, 624, 374, 124]
    assert t_end.tolist() == [749, 499, 249, -1]
    a, s = d.alpha_sigma(torch.tensor([-1, 0]), torch.zeros(2, 1, dtype=torch.float64))
    assert a[0].item() == 1.0 and s[0].item() == 0.0 and math.isclose(a[1].item() ** 2, d.alpha_bar[0].item())


def exact_student(teacher, d: Diffusion, N: int):
    """The student a perfect distillation would give: at each of its timesteps it predicts the
    target x̃ (as v = (α_t·z_t − x̃)/σ_t, the v-parameterisation)."""
    t_all, mid_all, end_all = student_steps(d, N)

    def student(z, t):
        i = (t_all[None, :] == t[:, None]).int().argmax(1)
        z_end = teacher_two_steps(teacher, d, z, t, mid_all[i], end_all[i], clip=False)
        a_t, s_t = d.alpha_sigma(t, z)
        a_end, s_end = d.alpha_sigma(end_all[i], z)
        x_target = distillation_target(z, z_end, a_t, s_t, a_end, s_end)
        return (a_t * z - x_target) / s_t
    return student


def test_an_exact_student_of_an_analytic_teacher_reproduces_the_teachers_two_steps():
    """With the exact denoiser for Gaussian data as teacher, a student that predicts the target
    samples in N DDIM steps exactly what the teacher's own sampler gives in 2N (the loop and the
    timesteps of SamplerConfig, not the distillation code); and its distillation loss is zero."""
    d = Diffusion(make_betas("cosine", 1000), prediction="v")
    teacher = analytic_model(d.alpha_bar, "v")
    x_T = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for N in (1, 2, 4):
        by_teacher = SamplerConfig("ddim", 2 * N, clip_x0=False).sample(Denoiser(d, teacher), x_T, progress=False)
        by_student = SamplerConfig("ddim", N, clip_x0=False).sample(Denoiser(d, exact_student(teacher, d, N)), x_T,
                                                                      progress=False)
        assert torch.allclose(by_student, by_teacher, atol=1e-9), N
    x0 = 0.3 + 0.5 * torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = progressive_loss(exact_student(teacher, d, 4), teacher, d, x0, 4, clip=False)
    assert loss.item() < 1e-18


def test_a_ddim_step_lands_where_its_formula_says():
    """ddim_step_to (a timestep per image) against the DDIM step of process.py (Song et al. Eq. 12, η = 0)."""
    d = Diffusion(make_betas("linear", 1000))
    z, x0 = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    eps = (z - d.alpha_bar_at(600) ** 0.5 * x0) / (1 - d.alpha_bar_at(600)) ** 0.5
    mean, _ = d.ddim_step(x0, eps, 600, 300)
    assert torch.allclose(d.ddim_step_to(z, x0, torch.full((3,), 600), torch.full((3,), 300)), mean, atol=1e-12)


def test_a_tiny_distillation_resumes_bit_exactly_and_samples_through_sample_py(tmp_path, capsys):
    """Two rounds (4 -> 2 -> 1 steps) of 3 optimizer steps each: run whole, and stopped after 4
    steps (inside the second round) then resumed; the students are the same to the bit, and
    sample.py samples the 1-step student in 1 step without being told."""
    import distill
    import sample
    from minigen.training.checkpoint import load_checkpoint
    old = Path(__file__).parent / "data" / "before_refactor"
    args = ["--teacher", str(old / "v.pt"), "--start-steps", "4", "--steps-per-round", "3", "--batch-size", "4",
            "--max-images", "32"]
    assert distill.run(distill.main, args + ["--out", str(tmp_path / "whole")]) == 0
    assert distill.run(distill.main, args + ["--out", str(tmp_path / "split"), "--stop-after", "4"]) == 0
    assert not (tmp_path / "split" / "steps_1.pt").exists() and (tmp_path / "split" / "steps_2.pt").exists()
    assert distill.run(distill.main, args + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    for name in ("steps_2.pt", "steps_1.pt", "last.pt"):
        a, b = load_checkpoint(tmp_path / "whole" / name), load_checkpoint(tmp_path / "split" / name)
        for part in ("model", "others"):
            flat = lambda s: s if part == "model" else s["teacher"]
            if part in a:
                assert all(torch.equal(flat(a[part])[k], flat(b[part])[k]) for k in flat(a[part])), (name, part)
        assert all(torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]) for k in a["ema"]["model"]), name
    assert load_checkpoint(tmp_path / "whole" / "steps_1.pt")["extra"]["distilled_steps"] == 1
    capsys.readouterr()
    assert sample.run(sample.main, ["--ckpt", str(tmp_path / "whole" / "steps_1.pt"), "--no-progress",
                                    "--out", str(tmp_path / "s.png")]) == 0
    assert "ddim 1 steps" in capsys.readouterr().out


def test_an_eps_teacher_is_refused_in_one_line(tmp_path, capsys):
    import distill
    old = Path(__file__).parent / "data" / "before_refactor"
    assert distill.run(distill.main, ["--teacher", str(old / "ddpm.pt"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "predicts ε" in err
    assert distill.run(distill.main, ["--teacher", str(old / "v.pt"), "--start-steps", "6",
                                      "--out", str(tmp_path / "d")]) == 2
    assert "power of 2" in capsys.readouterr().err


def test_the_consistency_function_of_the_teachers_own_solver_has_zero_loss():
    """Song et al.'s CD loss vanishes for the consistency function of the discretised ODE: f(x, t_n)
    = the teacher's DDIM run from t_n down the grid to clean data (computed by the sampling loop,
    not the distillation code). Then f at t_0 = 999 in one step is the teacher's N-step sample.
    A student that is the teacher itself does not have zero loss (its x̂_0 is not consistent)."""
    d = Diffusion(make_betas("linear", 1000), prediction="v")
    teacher = analytic_model(d.alpha_bar, "v")
    N = 5
    grid = d.timesteps(N).tolist()

    def f_as_v(x, t):            # a "network" whose x̂_0 is the teacher's DDIM run from t to clean, as v
        out = torch.empty_like(x)
        for level in t.unique().tolist():
            rows = t == level
            if level not in grid:   # the clean end, where the loss uses the boundary condition instead
                out[rows] = 0
                continue
            x0 = SamplerConfig("ddim", clip_x0=False).sample(Denoiser(d, teacher), x[rows], grid[grid.index(level):],
                                                             progress=False)
            a, s = d.alpha_sigma(t[rows], x[rows])
            out[rows] = (a * x[rows] - x0) / s
        return out

    x0 = 0.3 + 0.5 * torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    assert consistency_loss(f_as_v, f_as_v, teacher, d, x0, N, clip=False).item() < 1e-20
    torch.manual_seed(0)
    assert consistency_loss(teacher, teacher, teacher, d, x0, N, clip=False).item() > 1e-4
    x_T = torch.randn(8, 1, 2, 2, dtype=torch.float64)
    one = SamplerConfig("cm", 1, clip_x0=False).sample(Denoiser(d, f_as_v), x_T, progress=False)
    assert torch.allclose(one, SamplerConfig("ddim", N, clip_x0=False).sample(Denoiser(d, teacher), x_T, progress=False))


def test_multistep_consistency_sampling_noises_x0_afresh():
    """The cm step: x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev)·z (Song et al. 2023, Algorithm 1), and x̂_0 at the end."""
    from minigen.diffusion import Denoised
    from minigen.diffusion.samplers import make_step
    d = Diffusion(make_betas("linear", 1000))
    x0 = torch.randn(2, 1, 2, 2)
    step = make_step(d, "cm")
    mean, std = step(Denoised(x0 * 0, x0, x0 * 0), 999, 499)
    assert torch.allclose(mean, d.alpha_bar[499].sqrt().float() * x0) and math.isclose(std, (1 - d.alpha_bar[499].item()) ** 0.5)
    mean, std = step(Denoised(x0 * 0, x0, x0 * 0), 499, -1)
    assert torch.equal(mean, x0) and std == 0.0


def test_a_tiny_consistency_distillation_samples_in_one_and_in_two_steps(tmp_path, capsys):
    import distill
    import sample
    old = Path(__file__).parent / "data" / "before_refactor"
    assert distill.run(distill.main, ["--teacher", str(old / "v.pt"), "--method", "consistency", "--start-steps", "8",
                                      "--steps-per-round", "3", "--batch-size", "4", "--max-images", "32",
                                      "--out", str(tmp_path / "cd")]) == 0
    capsys.readouterr()
    for steps in ("1", "2"):
        assert sample.run(sample.main, ["--ckpt", str(tmp_path / "cd" / "steps_1.pt"), "--sampler", "cm", "--steps", steps,
                                        "--no-progress", "--out", str(tmp_path / "s.png")]) == 0
        assert f"cm {steps} steps" in capsys.readouterr().out


def test_the_consistency_student_is_not_clipped_so_an_overshoot_is_pulled_back():
    """A student whose x̂_0 is c = 3 everywhere, a teacher and a target network whose x̂_0 is 0: the
    goal is 0 on every step (a DDIM step with x̂_0 = 0 to clean data lands on 0 too), so
    L = (c − 0)² = 9 and dL/dc = 2c = 6. Clipping the student's x̂_0 to 1 would give L = 1 and a
    gradient of exactly 0 (Song et al. 2023, Algorithm 2, has no clipping)."""
    d = Diffusion(make_betas("linear", 1000), prediction="v")
    c = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)

    def as_v(x0_hat):                      # a network whose x̂_0 = α·x − σ·v equals x0_hat
        def network(x, t):
            a, s = d.alpha_sigma(t, x)
            return (a * x - x0_hat) / s
        return network

    x0 = torch.rand(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    zero = as_v(torch.zeros((), dtype=torch.float64))
    loss = consistency_loss(as_v(c), zero, zero, d, x0, 4, clip=True)
    loss.backward()
    assert math.isclose(loss.item(), 9.0, rel_tol=1e-9)
    assert math.isclose(c.grad.item(), 6.0, rel_tol=1e-9)
