"""Text to image: cross-attention, the empty prompt as the null condition, prompts through every
sampler, and a tiny text-conditional model end to end."""

import json

import pytest
import torch

import edit
import sample
import train_ldm
from minigen import pipelines
from minigen.diffusion import Diffusion, DiffusionConfig, SamplerConfig
from minigen.diffusion.guidance import Denoiser
from minigen.layers import SpatialCrossAttention
from minigen.models.text import preset as text_preset
from minigen.models.text_to_image import TextToImage, TextToImageConfig
from minigen.models.unet import preset as unet_preset
from minigen.tokenizer import PAD, Tokenizer
from minigen.training.checkpoint import load_checkpoint


def test_cross_attention_to_a_single_token_adds_that_tokens_projected_value_everywhere():
    """With one key, softmax gives it weight 1: every position gets W_o·(W_v·c + b_v) + b_o."""
    torch.manual_seed(0)
    block = SpatialCrossAttention(channels=8, context_dim=6, num_heads=2)
    torch.nn.init.normal_(block.attn.proj.weight)                       # zero at init; any value for the test
    torch.nn.init.normal_(block.attn.proj.bias)
    x, c = torch.randn(2, 8, 3, 4), torch.randn(2, 1, 6)
    w_v, b_v = block.attn.kv.weight[8:], block.attn.kv.bias[8:]            # K then V in the kv projection
    value = c[:, 0] @ w_v.T + b_v                                          # (2, 8)
    expected = x + (value @ block.attn.proj.weight.T + block.attn.proj.bias)[:, :, None, None]
    assert torch.allclose(block(x, c), expected, atol=1e-5)


def test_padding_tokens_get_zero_weight_and_change_nothing():
    torch.manual_seed(1)
    block = SpatialCrossAttention(channels=8, context_dim=6, num_heads=2)
    torch.nn.init.normal_(block.attn.proj.weight)
    x, c = torch.randn(1, 8, 2, 2), torch.randn(1, 5, 6)
    mask = torch.tensor([[True, True, True, False, False]])
    weights = block.attn.weights(x.flatten(2).transpose(1, 2), c, mask)   # (1, heads, 4, 5)
    assert torch.all(weights[..., 3:] == 0) and torch.allclose(weights.sum(-1), torch.ones(1, 2, 4))
    other = c.clone()
    other[:, 3:] = torch.randn(1, 2, 6) * 10                               # whatever sits under the padding
    assert torch.allclose(block(x, c, mask), block(x, other, mask), atol=1e-6)


def tiny_model(freeze: bool = False) -> tuple[TextToImage, Tokenizer]:
    tokenizer = Tokenizer.learn(["a small red circle", "a large blue square"], max_len=8)
    text = text_preset("tiny", vocab_size=len(tokenizer), max_len=8)
    unet = unet_preset("tiny", image_channels=3, image_size=(16, 16), attention_resolutions=(8,), context_dim=text.dim)
    torch.manual_seed(2)
    model = TextToImage(TextToImageConfig(unet, text, freeze)).eval()
    for block in model.unet.modules():                                    # let the text matter at init
        if isinstance(block, SpatialCrossAttention):
            torch.nn.init.normal_(block.attn.proj.weight, std=0.5)
    torch.nn.init.normal_(model.unet.head[-1].weight, std=0.5)
    torch.nn.init.normal_(model.pooled.weight, std=0.5)
    return model, tokenizer


def test_the_empty_prompt_is_the_null_condition_and_prompts_matter():
    model, tokenizer = tiny_model()
    ids, mask = tokenizer.encode(["a small red circle", "a large blue square"])
    empty_ids, empty_mask = tokenizer.encode(["", ""])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        null = model(x, t, **model.null_condition(ids, mask))
        assert torch.equal(null, model(x, t, empty_ids, empty_mask))
        assert not torch.allclose(model(x, t, ids, mask), null)
    dropped = model.drop_condition(1.0, ids, mask)
    assert torch.equal(dropped["ids"], empty_ids) and torch.equal(dropped["mask"], empty_ids != PAD)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "cm"])
def test_the_prompt_reaches_the_network_unchanged_through_every_sampler(sampler):
    model, tokenizer = tiny_model()
    ids, mask = tokenizer.encode(["a small red circle", "a large blue square"])
    seen = []

    def spy(x, t, **cond):
        seen.append(cond)
        return model(x, t, **cond)
    spy.null_condition = model.null_condition
    d = Denoiser(Diffusion.from_config(DiffusionConfig(T=20)), spy)
    SamplerConfig(sampler, steps=3).sample(d, torch.randn(2, 3, 16, 16), cond={"ids": ids, "mask": mask},
                                           progress=False)
    assert len(seen) == 3 and all(torch.equal(c["ids"], ids) and torch.equal(c["mask"], mask) for c in seen)


def test_a_frozen_text_encoder_gets_no_gradient():
    model, tokenizer = tiny_model(freeze=True)
    model.train()
    ids, mask = tokenizer.encode(["a small red circle"])
    model(torch.randn(1, 3, 16, 16), torch.tensor([3]), ids, mask).square().mean().backward()
    assert all(p.grad is None for p in model.text.parameters()) and not model.text.training
    assert any(p.grad is not None for p in model.unet.parameters())


def test_a_tiny_text_model_resumes_bit_exactly_and_samples_from_prompts(text_autoencoder, tmp_path, capsys):
    args = ["--dataset", "captioned-shapes", "--condition", "text", "--autoencoder", text_autoencoder,
            "--preset", "tiny", "--steps", "4",
            "--batch-size", "8", "--max-images", "64", "--sample-every", "0", "--sample-steps", "2", "--warmup", "1"]
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "whole")]) == 0
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "split"), "--stop-after", "2"]) == 0
    assert train_ldm.run(train_ldm.main, args + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "split"))
    assert all(torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]) for k in a["ema"]["model"])
    pipe = pipelines.load(tmp_path / "whole" / "last.pt")
    assert pipe.tokenizer is not None and pipe.num_classes == 0

    ckpt = ["--ckpt", str(tmp_path / "whole" / "last.pt"), "--steps", "2", "--no-progress"]
    prompts = ["--prompt", "a large blue circle in the centre on black", "--prompt", "red cross, small, top left, on white"]
    assert sample.run(sample.main, ckpt + prompts + ["-n", "4", "--negative-prompt", "red", "--out",
                                                     str(tmp_path / "s.png"), "--save-npz", str(tmp_path / "s.npz")]) == 0
    import numpy as np
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 32, 32, 3)
    # Text-guided inpainting: replace a region of an RGB image by prompt (original | mask | kept | results).
    from PIL import Image
    Image.new("RGB", (32, 32), (128, 128, 128)).save(tmp_path / "gray.png")
    assert edit.run(edit.main, ckpt + ["--inpaint", str(tmp_path / "gray.png"), "--mask-box", "8,8,24,24", "-n", "2",
                                           "--prompt", "a large green triangle in the centre on gray",
                                           "--out", str(tmp_path / "inpaint.png")]) == 0
    assert Image.open(tmp_path / "inpaint.png").size[0] > 5 * 32
    capsys.readouterr()
    assert sample.run(sample.main, ckpt + ["--prompt", "a crimson circle", "--out", str(tmp_path / "u.png")]) == 2
    assert "unknown word in the prompt: 'crimson'" in capsys.readouterr().err
    assert sample.run(sample.main, ckpt + ["--class", "1", "--out", str(tmp_path / "c.png")]) == 2
    assert sample.run(sample.main, ckpt + prompts + ["--prompt", "a small red circle", "-n", "2",
                                                     "--out", str(tmp_path / "few.png")]) == 2
    assert "-n 2: fewer images than the 3 prompts" in capsys.readouterr().err
    assert sample.run(sample.main, ckpt + ["--prompt", "a large blue círcle 🔵", "--out", str(tmp_path / "u.png")]) == 2
    assert "unknown words in the prompt: 'círcle', '🔵'" in capsys.readouterr().err
    assert sample.run(sample.main, ckpt + ["--prompt", "a large blue circle", "--negative-prompt", "a crimson one",
                                           "--out", str(tmp_path / "neg.png")]) == 2
    assert "unknown words in the negative prompt: 'crimson', 'one'" in capsys.readouterr().err
    assert sample.run(sample.main, ckpt + ["--prompt", "red " * 24 + "blue", "--out", str(tmp_path / "long.png")]) == 2
    assert "the prompt has 25 words; this model reads at most 23, so 2 would be dropped (red blue)" \
        in capsys.readouterr().err
    assert sample.run(sample.main, ckpt + ["--prompt", "   ", "--out", str(tmp_path / "e.png")]) == 2
    assert "an empty prompt says nothing to draw" in capsys.readouterr().err


def test_a_frozen_clip_text_tower_arrives_and_stays_as_trained(text_autoencoder, tmp_path):
    import train_clip
    clip_args = ["--preset", "tiny", "--steps", "2", "--batch-size", "16", "--max-images", "32", "--eval-every", "0"]
    assert train_clip.run(train_clip.main, clip_args + ["--out", str(tmp_path / "clip")]) == 0
    args = ["--dataset", "captioned-shapes", "--condition", "text", "--autoencoder", text_autoencoder,
            "--preset", "tiny", "--steps", "2",
            "--batch-size", "8", "--max-images", "32", "--sample-every", "0", "--sample-steps", "1"]
    assert train_ldm.run(train_ldm.main, args + ["--text-encoder", str(tmp_path / "clip" / "last.pt"), "--freeze-text",
                                                   "--out", str(tmp_path / "t2i")]) == 0
    clip = load_checkpoint(tmp_path / "clip" / "last.pt")["model"]
    state = load_checkpoint(tmp_path / "t2i" / "last.pt")
    for weights in (state["model"], state["ema"]["model"]):
        assert all(torch.equal(weights[k], v) for k, v in clip.items() if k.startswith("text."))
    assert state["extra"]["tokenizer"] == load_checkpoint(tmp_path / "clip" / "last.pt")["extra"]["tokenizer"]
    assert train_ldm.run(train_ldm.main, args + ["--freeze-text", "--out", str(tmp_path / "x")]) == 2

    # Both judges of prompt accuracy read the samples: the CLIP and an attribute classifier.
    import train_vit

    from minigen.evaluation import prompts
    vit_args = ["--dataset", "captioned-shapes", "--preset", "tiny", "--steps", "2", "--batch-size", "8",
                "--max-images", "32", "--eval-every", "0", "--patch-size", "8"]
    assert train_vit.run(train_vit.main, vit_args + ["--attributes", "--stem", "conv", "--out", str(tmp_path / "a")]) == 0
    assert train_vit.run(train_vit.main, vit_args + ["--out", str(tmp_path / "c")]) == 0          # classes only
    judge = pipelines.load(tmp_path / "a" / "last.pt")
    assert judge.read_attributes(torch.zeros(3, 3, 32, 32)).shape == (3, 5)
    evaluate = ["--ckpt", str(tmp_path / "t2i" / "last.pt"), "-n", "2", "--steps", "1", "--out", str(tmp_path / "p")]
    assert prompts.main(evaluate + ["--clip", str(tmp_path / "clip" / "last.pt"), "--judge",
                                    str(tmp_path / "a" / "last.pt"), "--sampler", "dpm++"]) == 0
    report = json.loads((tmp_path / "p" / "prompts.json").read_text())
    assert report["args"]["sampler"] == "dpm++"
    assert set(report["held_out"]["plain"]) == {"clip", "classifier", "ink", "images_per_s", "CLIPScore", "all_judges",
                                                "judges_agree"}
    verdict = report["held_out"]["plain"]
    assert verdict["all_judges"] <= min(verdict[j]["all"] for j in ("clip", "classifier", "ink"))   # the strict one
    assert {"all_small", "all_large", "shape_small", "shape_large"} <= set(verdict["ink"])
    assert set(report["features_plain"]) == {"FD", "precision", "recall"}
    shapes = report["seen"]["plain"]["classifier"]["shape_confusion"]                   # 2 prompts, 4 shapes
    assert len(shapes) == 4 and sum(map(sum, shapes)) == 2
    with pytest.raises(SystemExit):
        prompts.main(evaluate + ["--judge", str(tmp_path / "c" / "last.pt")])                # not an attribute judge


def test_the_confusion_counts_each_asked_value_by_what_was_read():
    from minigen.evaluation.prompts import confusion
    asked, read = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion(read, asked, 3) == [[1, 1, 0],      # a circle read right, one read as a square
                                         [0, 1, 0],
                                         [1, 0, 2]]
