"""Progressive distillation (Salimans & Ho 2022): the target by hand, an exact student of an
analytic teacher, and a tiny distill.py run that checkpoints, resumes bit-exactly and samples."""

import math
from pathlib import Path

import pytest
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


def gaussian_model(alpha_bar: torch.Tensor, mu: float, s: float):
    """The exact v-predictor for N(mu, s²) data (as tests/test_samplers_analytic.analytic_model)."""
    def model(x_t, t):
        ab = alpha_bar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        D = ab * s**2 + 1 - ab
        x0 = mu + ab.sqrt() * s**2 / D * (x_t - ab.sqrt() * mu)
        eps = (1 - ab).sqrt() / D * (x_t - ab.sqrt() * mu)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    return model


def test_an_exact_guidance_distilled_student_has_zero_loss_against_the_two_pass_teacher():
    """Guidance distilled in (Meng et al. 2023): the teacher is a class model (y = 0: data N(1, 0.3²);
    y = 1, the null label: N(−0.5, 0.8²)); distill.py's first-round teacher is two passes of
    ClassifierFreeGuidance with one w per image, over a network that takes w. Its output must be
    u + w_i·(c − u) for each image (computed here from the two Gaussians), and a student with
    w as an input that predicts the guided target for each w has zero progressive loss."""
    from minigen.diffusion import ClassifierFreeGuidance, GuidanceInput
    d = Diffusion(make_betas("cosine", 1000), prediction="v")
    c, u = gaussian_model(d.alpha_bar, 1.0, 0.3), gaussian_model(d.alpha_bar, -0.5, 0.8)

    class Teacher:                       # a class model whose w-embedding is still zero: it ignores w
        def __call__(self, x, t, y, w):
            return torch.where((y == 0).view(-1, 1, 1, 1), c(x, t), u(x, t))

        def null_condition(self, y):
            return {"y": torch.ones_like(y)}

    B = 6
    w = torch.tensor([1.0, 1.5, 2.0, 3.0, 4.5, 6.0], dtype=torch.float64)
    w4 = w.view(-1, 1, 1, 1)
    y = torch.zeros(B, dtype=torch.long)
    two_pass = ClassifierFreeGuidance(GuidanceInput(Teacher(), w.repeat(2)), w4)
    x = torch.randn(B, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([999, 800, 500, 300, 100, 10])
    assert torch.allclose(two_pass(x, t, y=y), u(x, t) + w4 * (c(x, t) - u(x, t)), atol=1e-12)

    guided = lambda x, t: u(x, t) + w4 * (c(x, t) - u(x, t))          # the target, per image
    exact = exact_student(guided, d, 2)
    student = GuidanceInput(lambda x, t, y, w: exact(x, t), w)
    x0 = 1.0 + 0.3 * torch.randn(B, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert progressive_loss(student, two_pass, d, x0, 2, clip=False, y=y).item() < 1e-18
    wrong = GuidanceInput(lambda x, t, y, w: exact_student(c, d, 2)(x, t), w)   # the unguided student
    assert progressive_loss(wrong, two_pass, d, x0, 2, clip=False, y=y).item() > 1e-4


def test_a_student_with_the_guidance_input_starts_as_its_teacher_at_every_w():
    """distill.student_of copies the teacher and adds a zero-initialised w-embedding: for any w the
    student's output is the teacher's own (unguided) output, exactly; its text encoder is frozen."""
    import distill
    from minigen.models.text_to_image import TextToImage, TextToImageConfig
    from minigen.models.text import preset as text_preset
    from minigen.models.unet import preset
    torch.manual_seed(0)
    unet = preset("tiny", image_channels=2, image_size=(8, 8), context_dim=32, attention_resolutions=(4,))
    teacher = TextToImage(TextToImageConfig(unet, text_preset("tiny", vocab_size=12, max_len=6, dim=32))).eval()
    for p in teacher.parameters():                     # weights away from their zero initialisation
        p.data.add_(0.05 * torch.randn_like(p))
    student = distill.student_of(teacher, guided=True).eval()
    assert student.config.unet.guidance_embedding and not any(p.requires_grad for p in student.text.parameters())
    x, t = torch.randn(3, 2, 8, 8), torch.tensor([900, 400, 20])
    ids = torch.tensor([[2, 5, 6, 0, 0, 0]] * 3)
    with torch.no_grad():
        want = teacher(x, t, ids, ids != 0)
        for w in (1.0, 3.0, 7.5):
            assert torch.equal(student(x, t, ids, ids != 0, w=torch.full((3,), w)), want)
    with pytest.raises(ValueError, match="guidance scale w"):
        student(x, t, ids, ids != 0)
    with pytest.raises(ValueError, match="give no w"):
        teacher(x, t, ids, ids != 0, w=torch.ones(3))


def test_a_latent_text_model_distils_with_guidance_in_and_samples_in_one_pass(text_model, tmp_path, capsys):
    """distill.py on a tiny latent text-to-image teacher with --guidance-range: the student carries
    the autoencoder and the tokenizer, takes w, and sample.py draws from it in one step with one
    network pass per step; a negative prompt is refused in one line."""
    import distill
    import sample
    from minigen import pipelines
    assert distill.run(distill.main, ["--teacher", str(text_model), "--guidance-range", "1,6",
                                      "--start-steps", "2", "--steps-per-round", "2", "--batch-size", "4",
                                      "--max-images", "16", "--out", str(tmp_path / "turbo")]) == 0
    pipe = pipelines.load(tmp_path / "turbo" / "steps_1.pt")
    assert pipe.guidance_distilled and pipe.latent is not None and pipe.tokenizer is not None
    assert pipe.distilled_steps == 1
    calls = []
    pipe.network.register_forward_hook(lambda module, args, kwargs_out: calls.append(len(args[0])))
    from minigen.diffusion import SamplerConfig
    SamplerConfig("ddim", 1, clip_x0=False).sample(pipe.denoiser(4.0), pipe.noise(3),
                                                    cond=pipe.prompts(["a small red circle in the centre on black"] * 3),
                                                    progress=False)
    assert calls == [3]                                                    # one pass of the batch, not two
    capsys.readouterr()
    ckpt = str(tmp_path / "turbo" / "steps_1.pt")
    assert sample.run(sample.main, ["--ckpt", ckpt, "--prompt", "a large red circle in the centre on white", "-n", "2",
                                    "--no-progress", "--out", str(tmp_path / "s.png")]) == 0
    assert "ddim 1 steps" in capsys.readouterr().out
    assert sample.run(sample.main, ["--ckpt", ckpt, "--prompt", "a large red circle in the centre on white",
                                    "--negative-prompt", "red", "--no-progress", "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "guidance distilled in" in err
