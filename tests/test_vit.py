"""The tiny ViT: patches, position embeddings, attention maps, and that it learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigen.models.vit import ViT, preset, sincos_2d


def test_patchify_cuts_row_major_patches():
    """Patch n = (row r, column c) holds pixels [rP:(r+1)P, cP:(c+1)P], flattened (y, x, channel)."""
    model = ViT(preset("tiny", image_channels=3, image_size=(14, 21), patch_size=7))
    x = torch.randn(2, 3, 14, 21)
    patches = model.patchify(x)
    assert patches.shape == (2, 6, 7 * 7 * 3)
    r, c = 1, 2                                                  # patch index r·3 + c = 5
    P = 7
    expected = x[1, :, r * P:(r + 1) * P, c * P:(c + 1) * P].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[1, r * 3 + c], expected)


def test_sincos_position_embedding_values():
    """dim 8: ω = (1, 10000^(−1/2)) = (1, 0.01); position (y=1, x=2) -> sin y, sin .01y, cos y, cos .01y, sin x, ..."""
    pe = sincos_2d(3, 4, 8)
    assert pe.shape == (12, 8)
    y, x = 1, 2
    expected = [math.sin(y), math.sin(0.01 * y), math.cos(y), math.cos(0.01 * y),
                math.sin(x), math.sin(0.01 * x), math.cos(x), math.cos(0.01 * x)]
    assert pe[y * 4 + x].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("pos", ["learned", "sincos"])
def test_shapes_features_and_attention_maps(pos):
    cfg = preset("tiny", image_channels=3, image_size=(32, 32), patch_size=4, depth=2, pos_embedding=pos, num_classes=7)
    model = ViT(cfg)
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 7) and model.features(x).shape == (5, cfg.dim)
    maps = model.attention_maps(x)
    assert maps.shape == (2, 5, 8, 8)
    # Each map is [CLS]'s attention to the patches: positive, summing to at most 1 ([CLS] takes the rest).
    assert (maps > 0).all() and (maps.sum(dim=(2, 3)) <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="does not divide"):
        ViT(preset("tiny", patch_size=5))


def test_a_tiny_vit_overfits_a_small_batch():
    torch.manual_seed(0)
    model = ViT(preset("tiny", patch_size=4, depth=2))
    x, y = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() == 1.0 and loss.item() < 0.1


def test_time_conditioned_vit_sees_the_timestep():
    """A noise-aware classifier's output depends on t; without t it reads as t = 0 (clean)."""
    torch.manual_seed(0)
    model = ViT(preset("tiny", patch_size=4, time_conditioned=True))
    x = torch.randn(3, 1, 28, 28)
    t0, t5 = torch.zeros(3, dtype=torch.long), torch.full((3,), 500)
    assert torch.equal(model(x), model(x, t0))
    assert not torch.allclose(model(x, t0), model(x, t5))
    plain = ViT(preset("tiny", patch_size=4))
    assert torch.equal(plain(x), plain(x, t5))                  # an ordinary ViT ignores t


@pytest.mark.parametrize("P", [4, 8])
def test_conv_stem_tokens_see_a_little_past_their_patch(P):
    """Conv stem: log2(P) 3x3 stride-2 convolutions, then 1x1. A cell r of a stride-2 layer reads
    cells 2r−1..2r+1 of the layer below, so after one layer token r reads 2r−1..2r+1, after two
    4r−3..4r+3 (P = 4), after three 8r−7..8r+7 (P = 8): pixels P·r−(P−1) .. P·r+(P−1), padding
    aside. A pixel changes exactly the tokens whose window holds it, in row-major order."""
    torch.manual_seed(0)
    size = 4 * P                                                # a 4x4 grid of tokens
    model = ViT(preset("tiny", image_channels=3, image_size=(size, size), patch_size=P, stem="conv"))
    x = torch.randn(1, 3, size, size)
    y_px, x_px = P + 1, 3 * P                                   # P = 4: (5, 12); P = 8: (9, 24)
    bumped = x.clone()
    bumped[0, :, y_px, x_px] += 1.0
    with torch.no_grad():
        changed = (model.stem(bumped) - model.stem(x)).abs().amax(-1)[0] > 0     # (N,)
    reach = lambda r, px: P * r - (P - 1) <= px <= P * r + (P - 1)
    expected = torch.tensor([reach(r, y_px) and reach(c, x_px) for r in range(4) for c in range(4)])
    assert torch.equal(changed, expected)                      # rows 1, 2 x column 3: tokens 7 and 11
    assert model(x).shape == (1, model.config.num_classes)
    with pytest.raises(ValueError, match="power of 2"):
        ViT(preset("tiny", image_size=(24, 24), patch_size=6, stem="conv"))


def test_attribute_head_loss_and_reading():
    """One softmax per attribute: with all logits equal, each group's cross-entropy is log K_a,
    so the sum is log(4·6·2·5·3) = log 720; the reading is each group's argmax."""
    from train_vit import cross_entropy

    from minigen.models.vit import read_groups
    groups = [4, 6, 2, 5, 3]
    y = torch.tensor([[3, 5, 1, 4, 2], [0, 0, 0, 0, 0]])
    loss = cross_entropy(torch.zeros(2, 20), y, groups, label_smoothing=0.0)
    assert loss.item() == pytest.approx(math.log(720), abs=1e-5)
    logits = torch.full((2, 20), -1.0)
    starts = [0, 4, 10, 12, 17]
    for row in range(2):
        for a, start in enumerate(starts):
            logits[row, start + y[row, a]] = 1.0
    assert torch.equal(read_groups(logits, groups), y)
    assert torch.equal(read_groups(logits[:, :4], [4]).flatten(), y[:, 0])   # one group: plain argmax
