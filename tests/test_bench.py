"""The benchmark's arithmetic (not its speed): FLOP counts, activation bytes, ratios, and a smoke run."""

import json

import pytest
import torch
from torch import nn

from minigen.evaluation import bench


def test_train_step_flops_of_a_linear_layer():
    """y = x·Wᵀ with x (B, a), W (b, a): forward 2·B·a·b; backward computes ∂x and ∂W, 2·B·a·b each."""
    B, a, b = 16, 32, 8
    layer = nn.Linear(a, b, bias=False)
    x = torch.randn(B, a, requires_grad=True)
    flops = bench.train_step_flops(lambda: layer(x).sum().backward())
    assert flops == 3 * 2 * B * a * b


def test_activation_bytes_counts_what_autograd_saves():
    """Linear saves its input (B·a floats) for ∂W; ReLU saves its output (B·b floats). With an
    input that needs a gradient, Linear also saves W (for ∂x), which is a parameter, not counted."""
    B, a, b = 4, 10, 6
    net = nn.Sequential(nn.Linear(a, b), nn.ReLU())
    x = torch.randn(B, a)
    assert bench.activation_bytes(lambda: net(x), net.parameters()) == 4 * (B * a + B * b)
    x.requires_grad_(True)
    assert bench.activation_bytes(lambda: net(x), net.parameters()) == 4 * (B * a + B * b)
    assert bench.activation_bytes(lambda: net(x)) == 4 * (B * a + B * b + a * b)


def test_smoke_run_writes_consistent_ratios(tmp_path):
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    peak = report["machine"]["peak_fp32_tflops"]
    assert peak > 0
    rows = report["rows"]
    assert {r["section"] for r in rows} == {"train", "sampling", "scaling"}
    for r in rows:
        if r["section"] == "train":
            assert r["fraction_of_peak"] == pytest.approx(r["tflops"] / peak)
            assert r["images_per_s"] > 0
        if r["section"] == "sampling":
            assert r["overhead"] == pytest.approx((r["total_s"] - r["network_s"]) / r["total_s"])
            assert 0 < r["overhead"] < 1
            assert r["images_per_s"] == pytest.approx(r["batch"] / r["total_s"])
        if r["section"] == "scaling":
            assert r["activation_MiB_per_image"] == pytest.approx(r["activation_MiB"] / r["batch"])
    # Activation memory grows with batch and, faster than linearly in pixels, with image size.
    scaling = {(r["model"], r["batch"]): r["activation_MiB"] for r in rows if r["section"] == "scaling"}
    assert scaling[("U-Net 16px", 4)] > scaling[("U-Net 16px", 2)]
    assert scaling[("U-Net 32px", 2)] > 3 * scaling[("U-Net 16px", 2)]
    assert "| model | batch | compile |" in (tmp_path / "bench.md").read_text()
    shares = [r["share"] for r in report["profile"]["ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9


def test_median_times_takes_turns():
    """Variants are timed in alternation, round by round, so a drift in machine load hits all alike."""
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b"), lambda: calls.append("c")]
    medians = bench.median_times(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == ["a", "b", "c"] * 4
    assert len(medians) == 3 and all(m >= 0 for m in medians)


def test_each_training_row_is_held_against_the_peak_of_its_arithmetic():
    """bf16 rows against the bf16 matmul peak, TF32 rows against TF32's, the rest against fp32's;
    the better of the two peak measurements counts."""
    machine = {"peak_fp32_tflops": 50.0, "peak_tf32_tflops": 400.0, "peak_bf16_tflops": 700.0}
    rows = [{"section": "train", "tflops": 20.0, "amp": False, "tf32": False},
            {"section": "train", "tflops": 20.0, "amp": False, "tf32": True},
            {"section": "train", "tflops": 20.0, "amp": True, "tf32": False},
            {"section": "sampling"}]
    bench.finish(rows, machine, {"peak_fp32_tflops": 40.0, "peak_tf32_tflops": 500.0, "peak_bf16_tflops": 800.0})
    assert machine == {"peak_fp32_tflops": 50.0, "peak_tf32_tflops": 500.0, "peak_bf16_tflops": 800.0}
    assert [r.get("fraction_of_peak") for r in rows] == [20 / 50, 20 / 500, 20 / 800, None]
    assert bench.other_settings({"mode": "reduce-overhead", "fused": True}) == "whole step, CUDA graphs, fused AdamW"
    assert bench.other_settings({"mode": None, "tf32": True}) == "TF32"


def test_the_gpu_table_asks_for_a_gpu(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--gpu", "--device", "cpu"])
    assert exit_.value.code == 2 and "--gpu needs a CUDA device" in capsys.readouterr().err
