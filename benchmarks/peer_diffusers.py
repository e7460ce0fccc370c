"""minigen's U-Net against diffusers' UNet2DModel built to the same layout, on the same GPU, in
the same run: the training step (noising, forward, v/ε loss, backward, AdamW) timed in turns.

    pip install diffusers            # on the benchmark machine only: never a dependency of minigen
    python benchmarks/peer_diffusers.py [--batch 128] [--out runs/bench]

The layout is the `cifar` preset: 32 px RGB, channels 128-256-256-256, two ResBlocks per level
down (three up), self-attention at 16x16 and in the middle, 4 heads, GroupNorm 32, scale-and-
shift time conditioning, 11 class embeddings (10 classes and the null label), dropout 0.1.
Both run under the same settings: bf16 autocast, channels-last, fused AdamW, cudnn.benchmark;
eager, and the whole loss compiled with CUDA graphs (mode="reduce-overhead").
This file lives outside the minigen package: minigen never imports diffusers.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from minigen.evaluation import bench
from minigen.models import unet
from minigen.evaluation.cost import count_parameters


class Peer(nn.Module):
    """diffusers' UNet2DModel called as minigen calls its networks: net(x_t, t, y) -> output."""

    def __init__(self, cfg: unet.UNetConfig):
        super().__init__()
        from diffusers import UNet2DModel
        levels = len(cfg.channel_mults)
        size = cfg.image_size[0]
        attends = [size // 2**i in cfg.attention_resolutions for i in range(levels)]
        self.net = UNet2DModel(
            sample_size=size, in_channels=cfg.image_channels, out_channels=cfg.image_channels,
            block_out_channels=tuple(m * cfg.base_channels for m in cfg.channel_mults),
            layers_per_block=cfg.num_res_blocks,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attends),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
            attention_head_dim=cfg.base_channels * cfg.channel_mults[-1] // cfg.num_heads,
            norm_num_groups=cfg.groups, resnet_time_scale_shift="scale_shift", dropout=cfg.dropout,
            num_class_embeds=cfg.num_classes + 1, add_attention=True)
        self.null = cfg.num_classes

    def null_condition(self, y):
        return {"y": torch.full_like(y, self.null)}

    def forward(self, x, t, y=None):
        return self.net(x, t, class_labels=y).sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", default="eager,reduce-overhead",
                        help="eager and/or reduce-overhead (the whole loss compiled, replayed as CUDA graphs)")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    device = torch.device("cuda")
    cfg = unet.preset("cifar", num_classes=10)
    ours, peer = unet.UNet(cfg), Peer(cfg)
    sizes = {"minigen": count_parameters(ours), "diffusers": count_parameters(peer)}
    print(f"parameters: {sizes}", flush=True)
    fast = {"amp": True, "channels_last": True, "fused": True, "cudnn_benchmark": True}
    rows = []
    for mode in [None if m == "eager" else m for m in args.modes.split(",")]:
        variants = [("minigen", ours), ("diffusers", peer)]
        steps, flops = [], []
        for name, network in variants:
            step, _, _ = bench.make_step("unet", cfg, args.batch, device, True, True, False, fused=True, mode=mode,
                                         network=network)
            step = bench.with_backends(step, device, cudnn_benchmark=True)
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            print(f"{name} {mode or 'eager'}: first step {time.perf_counter() - start:.1f} s", flush=True)
            steps.append(step)
            flops.append(bench.train_step_flops(step) if mode is None else 0)
        for (name, _), seconds in zip(variants, bench.median_times(steps, device, args.repeats, warmup=2)):
            rows.append({"network": name, "mode": mode or "eager", "parameters": sizes[name],
                         "images_per_s": args.batch / seconds, "ms_per_step": seconds * 1e3, **fast})
        if mode is None:
            print(f"train-step FLOPs: minigen {flops[0] / 1e12:.3f} T, diffusers {flops[1] / 1e12:.3f} T", flush=True)
        print(rows[-2:], flush=True)
    table = ["| network | parameters | step | images/s | ms/step | minigen over diffusers |", "|---|---|---|---|---|---|"]
    for mine, theirs in zip(rows[::2], rows[1::2]):
        for r in (mine, theirs):
            table.append(f"| {r['network']} | {r['parameters'] / 1e6:.1f}M | {r['mode']} | {r['images_per_s']:.0f} | "
                         f"{r['ms_per_step']:.1f} | {mine['images_per_s'] / theirs['images_per_s']:.2f}x |")
    text = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, bf16, channels-last, fused AdamW\n\n" + "\n".join(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_diffusers.md").write_text(text + "\n")
    (out / "peer_diffusers.json").write_text(json.dumps(rows, indent=2))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
