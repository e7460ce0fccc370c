"""The U-Net: time embedding values, shapes for many configs, attention, and that it can learn."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigen.layers import SpatialSelfAttention, timestep_embedding
from minigen.models.unet import UNet, preset


def test_timestep_embedding_pinned_values():
    """dim 4: ω = (1, 10000^(−1/2)) = (1, 0.01); emb(t) = (sin t, sin 0.01t, cos t, cos 0.01t)."""
    emb = timestep_embedding(torch.tensor([0, 1, 1000]), 4)
    for row, t in zip(emb, (0, 1, 1000)):
        expected = [math.sin(t), math.sin(0.01 * t), math.cos(t), math.cos(0.01 * t)]
        assert row.tolist() == pytest.approx(expected, abs=1e-4)
    emb8 = timestep_embedding(torch.tensor([3]), 8)[0]          # ω_i = 10000^(−i/4)
    omegas = [10000 ** (-i / 4) for i in range(4)]
    assert emb8.tolist() == pytest.approx([math.sin(3 * w) for w in omegas] + [math.cos(3 * w) for w in omegas], abs=1e-5)
    assert timestep_embedding(torch.tensor([5]), 5).shape == (1, 5)   # odd dims are padded


@pytest.mark.parametrize("channels,size,mults,classes", [
    (1, (28, 28), (1, 2), 10),        # MNIST-like, conditional
    (3, (32, 32), (1, 2, 2), 0),      # RGB, unconditional, three levels
    (1, (16, 32), (1, 2, 2), 4),      # non-square
    (3, (24, 40), (1, 2, 2, 2), 0),   # non-square, four levels
])
def test_output_has_the_input_shape(channels, size, mults, classes):
    cfg = preset("tiny", image_channels=channels, image_size=size, channel_mults=mults, num_classes=classes,
                 attention_resolutions=(min(size) // 2,))
    model = UNet(cfg)
    x = torch.randn(2, channels, *size)
    y = torch.tensor([0, classes - 1]) if classes else None
    assert model(x, torch.tensor([0, 999]), y).shape == x.shape


def test_sizes_it_cannot_handle_are_refused_clearly():
    with pytest.raises(ValueError, match=r"30x30 is not divisible by 2\^2 = 4"):
        UNet(preset("tiny", image_size=(30, 30), channel_mults=(1, 2, 2)))
    model = UNet(preset("tiny"))
    with pytest.raises(ValueError, match="takes images of shape"):
        model(torch.randn(1, 3, 28, 28), torch.tensor([1]))


def test_attention_equals_softmax_qk_v_written_out():
    """SDPA gives softmax(QKᵀ/√d)V per head, as computed here by hand."""
    torch.manual_seed(0)
    attn = SpatialSelfAttention(8, num_heads=2, groups=2)
    torch.nn.init.normal_(attn.out.weight)                    # undo the zero init so the output shows
    x = torch.randn(2, 8, 3, 5)
    qkv = attn.qkv(attn.norm(x)).reshape(2, 3, 2, 4, 15)      # (B, qkv, heads, d, HW)
    q, k, v = qkv[:, 0].transpose(-1, -2), qkv[:, 1].transpose(-1, -2), qkv[:, 2].transpose(-1, -2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)   # (B, heads, HW, HW)
    h = (weights @ v).transpose(-1, -2).reshape(2, 8, 3, 5)
    assert torch.allclose(attn(x), x + attn.out(h), atol=1e-5)


def test_missing_label_means_the_null_label():
    model = UNet(preset("tiny", num_classes=10))
    torch.nn.init.normal_(model.head[-1].weight)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 500])
    assert torch.equal(model(x, t), model(x, t, torch.tensor([10, 10])))


def test_a_single_batch_is_overfit_and_labels_matter():
    """Regress the noise of one fixed batch (fixed t and ε): the loss falls by a large factor."""
    torch.manual_seed(0)
    model = UNet(preset("tiny", num_classes=4))
    x = torch.randn(8, 1, 28, 28)
    t = torch.randint(0, 1000, (8,))
    y = torch.arange(8) % 4
    target = torch.randn(8, 1, 28, 28)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        loss = F.mse_loss(model(x, t, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5
    with torch.no_grad():
        assert not torch.allclose(model(x, t, y), model(x, t, (y + 1) % 4))


def test_compiled_network_with_frozen_weights_samples_like_eager():
    """sample.py --compile runs torch.compile(model, options={"freezing": True}): inductor's
    generated code, with the weights folded in as constants, must draw the same DDIM samples from
    the same noise as the eager network, up to float rounding."""
    from minigen.diffusion import Diffusion, SamplerConfig
    from minigen.diffusion.schedules import make_betas
    from minigen.pipelines import DiffusionPipeline
    torch.manual_seed(0)
    model = UNet(preset("tiny", num_classes=3)).eval()
    with torch.no_grad():                     # the zero-initialised output convolutions would give ε̂ = 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = Diffusion(make_betas("linear", 100))
    x_T = torch.randn(4, 1, 28, 28)
    pipe = DiffusionPipeline(model, d)
    cond = pipe.condition(torch.tensor([0, 1, 2, 0]))
    draw = lambda net: SamplerConfig("ddim", 3).sample(pipe.denoiser(2.0, network=net), x_T, cond=cond, progress=False)
    eager = draw(model)
    compiled = draw(torch.compile(model, options={"freezing": True}))
    assert eager.abs().mean() > 0.1                                   # a non-trivial draw
    assert torch.allclose(compiled, eager, atol=1e-4)
