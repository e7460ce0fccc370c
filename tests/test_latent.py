"""Latent diffusion: the latents' scale, the mask on the latent grid, the U-Net fitted to a small
grid, and a tiny latent model end to end (train, resume bit-exactly, sample, refuse a bad autoencoder)."""

import pytest
import torch

import edit as edit_py
import sample
import train_ddpm
import train_ldm
import train_vae
from minigen import pipelines
from minigen.diffusion.latent import LatentSpace
from minigen.errors import CheckpointError
from minigen.models.autoencoder import Autoencoder, preset
from minigen.models.unet import PRESETS, fit_grid
from minigen.training.checkpoint import load_checkpoint


def test_the_scale_measured_on_one_batch_gives_unit_variance_on_another():
    """s = 1/std(z) from one batch of images; the latents s·z of a second batch drawn the same way
    have variance 1 (to sampling error), while the unscaled ones do not."""
    torch.manual_seed(0)
    autoencoder = Autoencoder(preset("tiny"))
    with torch.no_grad():                                        # as after training: large μ, small σ
        autoencoder.encoder.conv_out.weight.mul_(20)
        autoencoder.encoder.conv_out.bias[2:] = -6.0              # log σ² of the c = 2 channels
    images = lambda g: (torch.rand(512, 1, 28, 28, generator=g) * 2 - 1).cumsum(-1).clamp(-1, 1)  # streaky images
    space = LatentSpace.fit(autoencoder, images(torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2))
    mu, logvar = autoencoder.encode(images(torch.Generator().manual_seed(3)))
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(4))
    assert abs(z.var().item() - 1) > 0.2                         # the raw latents are not at unit scale
    assert (space.scale * z).var().item() == pytest.approx(1.0, abs=0.03)


def test_a_latent_cell_is_known_only_when_its_whole_patch_is():
    """f = 2 on a 4x4 mask whose left three columns are known: each 2x2 patch of columns 0-1 is
    known (cell 1), those of columns 2-3 hold an unknown pixel (cell 0)."""
    space = LatentSpace(Autoencoder(preset("tiny")), 1.0)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :3] = 1
    assert space.factor == 2
    assert torch.equal(space.mask(keep), torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]))


@pytest.mark.parametrize("grid, mults, attention", [((8, 8), (1, 2, 2), (2,)),   # 8 -> 4 -> 2: attention at the deepest
                                                    ((14, 14), (1, 2), (7,)),     # 14 -> 7; 7 is odd: two levels
                                                    ((7, 7), (1,), (7,))])        # no halving: one level
def test_the_cpu_preset_fitted_to_a_latent_grid(grid, mults, attention):
    """The cpu preset (28 -> 14 -> 7, attention at 7, its deepest level) on smaller grids."""
    config = fit_grid(PRESETS["cpu"], grid)
    assert (config.image_size, config.channel_mults, config.attention_resolutions) == (grid, mults, attention)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "vae"
    args = ["--preset", "tiny", "--steps", "3", "--batch-size", "8", "--max-images", "64", "--sample-every", "0"]
    assert train_vae.run(train_vae.main, args + ["--out", str(out)]) == 0
    return out / "last.pt"


def test_a_tiny_latent_model_resumes_bit_exactly_and_samples(autoencoder, tmp_path, capsys):
    args = ["--preset", "tiny", "--autoencoder", str(autoencoder), "--steps", "4", "--batch-size", "8",
            "--max-images", "64", "--sample-every", "0", "--sample-steps", "2", "--warmup", "1"]
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "whole")]) == 0
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "split"), "--stop-after", "2"]) == 0
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "split"))
    for part in ("model", "optimizer"):
        assert str(a[part]) == str(b[part])
    assert all(torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]) for k in a["ema"]["model"])

    pipe = pipelines.load(tmp_path / "whole" / "last.pt")
    vae = load_checkpoint(autoencoder)
    assert pipe.noise_shape == (2, 14, 14) and pipe.image_shape == (1, 28, 28)     # tiny VAE: f = 2, c = 2
    assert all(torch.equal(pipe.latent.autoencoder.state_dict()[k], vae["ema"]["model"][k]) for k in vae["ema"]["model"])
    assert pipe.clip_x0 is False                                # latents are not confined to [−1, 1]

    capsys.readouterr()
    out = tmp_path / "s.png"
    assert sample.run(sample.main, ["--ckpt", str(tmp_path / "whole" / "last.pt"), "--steps", "2", "-n", "10",
                                    "--out", str(out), "--save-npz", str(tmp_path / "s.npz"), "--no-progress"]) == 0
    import numpy as np
    assert np.load(tmp_path / "s.npz")["images"].shape == (10, 28, 28, 1)   # decoded to pixels
    assert "latent diffusion on 2x14x14 latents" in capsys.readouterr().out
    # every sampler, edit and loss guidance (through the decoder) works on latents; a threshold is refused
    ckpt = ["--ckpt", str(tmp_path / "whole" / "last.pt"), "--no-progress", "-n", "2", "--class", "1"]
    image = tmp_path / "s_strip.png"
    assert sample.run(sample.main, ckpt + ["--sampler", "dpm++", "--steps", "2", "--strip", "--out", str(out)]) == 0
    assert image.is_file()
    from PIL import Image
    Image.open(image).convert("L").resize((28, 28)).save(tmp_path / "in.png")
    for edit in (["--inpaint", str(tmp_path / "in.png"), "--mask-box", "0,0,14,28", "--resample", "1"],
                 ["--init", str(tmp_path / "in.png")], ["--invert", str(tmp_path / "in.png"), "-n", "1"]):
        assert edit_py.run(edit_py.main, ckpt + ["--steps", "2", "--out", str(tmp_path / "edit.png")] + edit) == 0
    assert sample.run(sample.main, ckpt + ["--color-target", "1", "--steps", "2", "--out", str(tmp_path / "c.png")]) == 0
    assert sample.run(sample.main, ckpt + ["--dynamic-threshold", "0.9", "--out", str(tmp_path / "c.png")]) == 2
    assert "acts on noisy pixels during sampling" in capsys.readouterr().err


def test_every_training_image_is_encoded_once_and_its_mirror_with_flip():
    """The cache of q(z|x) (train_ldm.py, distill.py): row i holds μ and log σ² of image i encoded on its own, and
    with --flip a second view holds those of the image mirrored by hand; a step's draw from the
    cache has the mean and variance of q(z|x) scaled by s."""
    from minigen.data import load_dataset
    from minigen.training.diffusion_run import latent_moments

    torch.manual_seed(0)
    latent = LatentSpace(Autoencoder(preset("tiny")), scale=2.0)
    data = load_dataset("glyphs", "train", n=12)
    moments = latent_moments(latent, data, flip=True, device="cpu", chunk=5)
    assert moments.shape == (2, len(data), 4, 14, 14)                     # tiny: c = 2, so 2c = 4 channels
    for i in (0, 7, len(data) - 1):
        x = data.batch(torch.tensor([i]))[0]
        mu, logvar = latent.autoencoder.encode(x)
        mu_m, logvar_m = latent.autoencoder.encode(x.flip(-1))
        assert torch.allclose(moments[0, i], torch.cat([mu, logvar], 1)[0], atol=1e-5)
        assert torch.allclose(moments[1, i], torch.cat([mu_m, logvar_m], 1)[0], atol=1e-5)
    mu, logvar = torch.full((20000, 1), 0.5), torch.full((20000, 1), torch.log(torch.tensor(0.09)).item())
    z = latent.draw(mu, logvar, torch.Generator().manual_seed(1))
    assert z.mean().item() == pytest.approx(2.0 * 0.5, abs=0.01)          # s·μ
    assert z.std().item() == pytest.approx(2.0 * 0.3, abs=0.01)           # s·σ


def test_a_missing_or_altered_autoencoder_is_refused_in_one_line(autoencoder, tmp_path, capsys):
    args = ["--preset", "tiny", "--steps", "1", "--batch-size", "8", "--max-images", "16", "--sample-every", "0",
            "--sample-steps", "1"]
    assert train_ldm.run(train_ldm.main, args + ["--autoencoder", str(tmp_path / "gone.pt"), "--out", str(tmp_path / "a")]) == 2
    assert "gone.pt: no such checkpoint file" in capsys.readouterr().err
    assert train_ldm.run(train_ldm.main, args + ["--autoencoder", str(autoencoder), "--image-size", "14",
                                                   "--out", str(tmp_path / "b")]) == 2
    assert "encodes 1x28x28 images; the data is 1x14x14" in capsys.readouterr().err
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "none")]) == 2
    assert "--autoencoder VAE_CKPT: latent diffusion needs a train_vae.py checkpoint" in capsys.readouterr().err
    # the command lines of before the split: one line naming the script that replaced them
    for old in (["--autoencoder", str(autoencoder)], ["--condition", "text"], ["--freeze-text"]):
        assert train_ddpm.run(train_ddpm.main, args + old + ["--out", str(tmp_path / "old")]) == 2
        assert "train_ldm.py's now: python train_ldm.py --autoencoder" in capsys.readouterr().err

    assert train_ldm.run(train_ldm.main, args + ["--autoencoder", str(autoencoder), "--out", str(tmp_path / "c")]) == 0
    assert train_ddpm.run(train_ddpm.main, args + ["--resume", "--out", str(tmp_path / "c")]) == 2
    assert f"continue it with python train_ldm.py --resume --out {tmp_path / 'c'}" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "c" / "last.pt")
    weights = state["extra"]["latent"]["weights"]
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3                        # one tensor nudged after training
    torch.save(state, tmp_path / "altered.pt")
    with pytest.raises(CheckpointError, match="embedded autoencoder .* was altered") as e:
        pipelines.load(tmp_path / "altered.pt")
    assert "\n" not in str(e.value)
    state = load_checkpoint(tmp_path / "c" / "last.pt")
    state["extra"]["latent"]["scale"] *= 1.01                   # the latents' scale changed after training
    torch.save(state, tmp_path / "rescaled.pt")
    with pytest.raises(CheckpointError, match="the scale s = .* is not the one the diffusion model was trained with"):
        pipelines.load(tmp_path / "rescaled.pt")


def test_the_latent_bench_counts_the_decoder_once_and_the_u_net_at_every_guided_step(autoencoder, tmp_path):
    """Sampling FLOPs per image from the bench's whole-run count, against a second derivation from
    single forward passes: steps × 2 (guidance runs the conditional and the null pass) × the
    U-Net's forward, plus one decoder pass for the latent model."""
    import json

    from minigen.evaluation import latent_bench
    from minigen.evaluation.cost import count_flops
    common = ["--preset", "tiny", "--steps", "1", "--batch-size", "8", "--max-images", "16", "--sample-every", "0",
              "--sample-steps", "1"]
    assert train_ddpm.run(train_ddpm.main, common + ["--out", str(tmp_path / "pixel")]) == 0
    assert train_ldm.run(train_ldm.main, common + ["--autoencoder", str(autoencoder), "--out", str(tmp_path / "latent")]) == 0
    assert latent_bench.main(["--pixel", str(tmp_path / "pixel" / "last.pt"), "--latent", str(tmp_path / "latent" / "last.pt"),
                              "--batch", "4", "--sample-batch", "2", "--steps", "3", "--repeats", "1",
                              "--out", str(tmp_path / "bench")]) == 0
    report = json.loads((tmp_path / "bench" / "latent_bench.json").read_text())
    pixel, latent = (pipelines.load(tmp_path / name / "last.pt") for name in ("pixel", "latent"))
    y = torch.zeros(1, dtype=torch.long)
    unet = lambda pipe: count_flops(pipe.network, pipe.noise(1), torch.zeros(1, dtype=torch.long), y)
    decoder = count_flops(latent.latent.autoencoder.decoder, latent.noise(1))
    expected = {"pixel": 3 * 2 * unet(pixel), "latent": 3 * 2 * unet(latent) + decoder}
    for row in report["rows"]:
        assert row["sample_gflop_per_image"] * 1e9 == pytest.approx(expected[row["model"]], rel=1e-6)
    assert report["ratio"]["sample"] == pytest.approx(report["rows"][1]["sample_images_per_s"]
                                                      / report["rows"][0]["sample_images_per_s"])
