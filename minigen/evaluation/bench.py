"""How fast is minigen on this machine, against the machine's own limit?

    python -m minigen.evaluation.bench                 # the full table, a few minutes on a 2-core CPU
    python -m minigen.evaluation.bench --quick         # no torch.compile rows, fewer repeats
    python -m minigen.evaluation.bench --smoke         # seconds: tiny models, checks the arithmetic (tests use it)
    python -m minigen.evaluation.bench --profile-only [--compiled]          # where one U-Net step's time goes
    python -m minigen.evaluation.bench --unet-only --inductor fallback_random=True   # what a compiler option is worth
    python -m minigen.evaluation.bench --gpu           # CUDA: the cifar U-Net under each CUDA setting (docs/gpu.md)

Every throughput is a median over repeated runs after warm-up, the variants of one model are
timed in turns (round by round), and every ratio (achieved FLOP/s over peak, compiled over
eager) is taken within this one run, since shared machines are noisy. The peak is measured,
not looked up: the fastest square fp32 matmul (and bf16 on CUDA) on this device, at the start
and again at the end of the run. FLOPs are counted by torch.utils.flop_counter (a multiply-add is 2).

Sections:
    machine    device, threads, torch, measured matmul peak
    train      training-step images/s and achieved FLOP/s for the U-Net, DCGAN and ViT,
               eager vs compiled (with compile time), fp32 vs bf16 (CUDA), NCHW vs channels-last
    sampling   DDPM / DDIM images/s at several step counts (guidance 3, as sample.py runs a
               conditional model), DDIM with the network compiled with frozen weights, and the
               sampler's overhead beyond the network's own forward passes
    scaling    images/s and activation memory (bytes saved for backward) against batch size
               and image size, where attention's quadratic cost shows
Writes the table as Markdown and JSON to --out (default runs/bench).
"""

import argparse
import ast
import json
import os
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..cli import Parser, number, positive, run, writable_folder
from ..device import pick_device
from ..diffusion import Diffusion, DiffusionConfig, SamplerConfig
from ..models import dcgan, unet, vit
from ..pipelines import DiffusionPipeline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_times(fns: list, device, repeats: int, warmup: int = 2) -> list[float]:
    """Median wall time of each fn() over `repeats` rounds after `warmup` rounds. The functions
    take turns within every round, so a slow drift in the machine's load (another job starting)
    falls on all of them alike and their ratios stay fair."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def median_time(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` runs."""
    return median_times([fn], device, repeats, warmup)[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes=(512, 1024, 2048), repeats: int = 5,
                tf32: bool = False) -> float:
    """Best FLOP/s of an n×n by n×n matmul (2n³ FLOPs) over a few sizes and repeats: this machine's
    practical peak. The fastest run, not the median: a peak is what the machine can do when
    nothing else gets in the way. `tf32`: fp32 matmuls on the tensor cores' TF32 path (CUDA)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def train_step_flops(step) -> int:
    """FLOPs of one training step (forward and backward), counted by the flop counter."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def activation_bytes(forward, parameters=()) -> int:
    """Bytes of the tensors autograd saves for backward during one forward, not counting the
    `parameters` themselves: the activation memory a training step needs, which is what grows
    with batch size and image size."""
    seen = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in parameters}
    total = 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return total


def make_step(kind: str, cfg, batch: int, device, channels_last: bool, amp: bool, compile_model: bool,
              fused: bool = False, mode: str | None = None, network: torch.nn.Module | None = None):
    """A closure doing one optimizer step of `kind` ("unet", "dcgan", "vit") on random data.
    For the U-Net, `mode` compiles the whole loss (noising, forward, loss) rather than the
    network alone, in that torch.compile mode ("default", or "reduce-overhead": replayed as CUDA
    graphs); `fused` takes AdamW's fused CUDA kernel; `network` replaces minigen's U-Net with
    another callable as net(x_t, t, y=labels) (a peer's, for a comparison)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    if kind == "unet":
        model = (network if network is not None else unet.UNet(cfg)).to(device).to(memory_format=fmt)
        d = Diffusion.from_config(DiffusionConfig()).to(device)
        x0 = torch.randn(batch, cfg.image_channels, *cfg.image_size, generator=g).to(device, memory_format=fmt)
        y = torch.randint(0, max(1, cfg.num_classes), (batch,), generator=g).to(device) if cfg.num_classes else None
        net = torch.compile(model) if compile_model else model
        kwargs = {"y": y} if y is not None else {}
        params = list(model.parameters())

        if mode is None:
            def loss_fn():
                return d.loss(net, x0, **kwargs)
        else:                                            # one graph from x_0 to the loss
            whole = torch.compile(lambda x0, kwargs: d.loss(model, x0, **kwargs), mode=mode)

            def loss_fn():
                return whole(x0, kwargs)
    elif kind == "dcgan":
        G, D = dcgan.Generator(cfg).to(device), dcgan.Discriminator(cfg).to(device)
        real = torch.randn(batch, cfg.image_channels, *cfg.image_size, generator=g).to(device)
        z = torch.randn(batch, cfg.z_dim, generator=g).to(device)
        netG, netD = (torch.compile(G), torch.compile(D)) if compile_model else (G, D)
        params = list(G.parameters()) + list(D.parameters())

        def loss_fn():   # both phases' losses in one backward: the same FLOPs as the two updates
            fake = netG(z)
            ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
            loss_d = (F.binary_cross_entropy_with_logits(netD(real).float(), ones)
                      + F.binary_cross_entropy_with_logits(netD(fake.detach()).float(), zeros))
            return loss_d + F.binary_cross_entropy_with_logits(netD(fake).float(), ones)
    else:
        model = vit.ViT(cfg).to(device)
        x = torch.randn(batch, cfg.image_channels, *cfg.image_size, generator=g).to(device)
        y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)
        net = torch.compile(model) if compile_model else model
        params = list(model.parameters())

        def loss_fn():
            return F.cross_entropy(net(x).float(), y)
    opt = torch.optim.AdamW(params, lr=1e-4, **({"fused": True} if fused else {}))

    def step():
        if mode == "reduce-overhead":                    # a new iteration: last step's graph outputs are done with
            torch.compiler.cudagraph_mark_step_begin()
        with autocast():
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, loss_fn, params


def with_backends(fn, device, tf32: bool = False, cudnn_benchmark: bool = False):
    """fn run under these CUDA backend settings, set before every call, so that variants with
    different settings can take turns. TF32 (10-bit mantissa) for fp32 matmuls and convolutions;
    cudnn.benchmark times the convolution algorithms once per shape and keeps the fastest."""
    if device.type != "cuda":
        return fn

    def run():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = cudnn_benchmark
        return fn()
    return run


def bench_train(rows: list, kind: str, name: str, cfg, batch: int, device, repeats: int,
                variants: list[dict]) -> None:
    """Time one training step of each variant in turns. A variant is a dict of flags (compile,
    amp, channels_last; on CUDA also fused, mode, tf32, cudnn_benchmark) and may replace the
    model's dropout (the same FLOPs: dropout is not counted)."""
    steps, firsts = [], []
    for v in variants:
        vcfg = replace(cfg, dropout=v["dropout"]) if "dropout" in v else cfg
        step, _, _ = make_step(kind, vcfg, batch, device, v.get("channels_last", False), v.get("amp", False),
                               v.get("compile", False), fused=v.get("fused", False), mode=v.get("mode"))
        step = with_backends(step, device, v.get("tf32", False), v.get("cudnn_benchmark", False))
        start = time.perf_counter()
        step()                                                   # includes compilation, if any
        _sync(device)
        firsts.append(time.perf_counter() - start)
        steps.append(step)
    flops = train_step_flops(steps[0])                           # the same model and batch for every variant
    for v, first, seconds in zip(variants, firsts, median_times(steps, device, repeats, warmup=1)):
        compiled = bool(v.get("compile") or v.get("mode"))
        rows.append({"section": "train", "model": name + (f", dropout {v['dropout']}" if "dropout" in v else ""), "batch": batch,
                     "compile": compiled, **{k: bool(v.get(k, False)) for k in ("amp", "channels_last", "fused", "tf32", "cudnn_benchmark")},
                     "mode": v.get("mode"), "images_per_s": batch / seconds, "tflops": flops / seconds / 1e12,
                     "first_step_s": first, "compile_s": first - seconds if compiled else None})


EAGER = ("eager", None, False)
COMPILED = ("compiled", {"freezing": True}, False)      # as sample.py --compile: frozen weights


def bench_sampling(rows: list, cfg, batch: int, device, repeats: int, step_counts=(10, 50),
                   variants=(EAGER,), samplers=("ddim", "ddpm")) -> None:
    """Images/s of the samplers, and the share of sampling time spent outside the network: the
    same sampler timed with a free "network" (one that returns its input) gives the loop's own
    cost directly, rather than as a small difference of two noisy timings. Each variant
    (label, torch.compile options or None, bf16 autocast) runs the per-step network call its
    way, timed in turns with the others; DDPM makes the same calls as DDIM, so it is timed
    with the first variant only."""
    # The network as sample.py loads it: a pipeline (random weights: speed does not depend on them).
    pipe = DiffusionPipeline(unet.UNet(cfg).to(device).eval(), Diffusion.from_config(DiffusionConfig()).to(device))
    free = lambda x, t, y=None: x                               # no computation: only the sampler's
    free.null_condition = pipe.network.null_condition
    # As sample.py runs a class-conditional model: guidance 3, so each network call sees 2·batch images.
    cond = pipe.condition(torch.arange(batch) % cfg.num_classes)
    nets = [(label, pipe.network if options is None else torch.compile(pipe.network, options=options), amp)
            for label, options, amp in variants]
    for sampler in samplers:
        for steps in step_counts:
            def run(net, amp=False, sampler=SamplerConfig(sampler, steps=steps)):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    return sampler.sample(pipe.denoiser(3.0, network=net), pipe.noise(batch), cond=cond, progress=False)
            loop = median_time(lambda run=run: run(free), device, repeats * 3, warmup=1)
            timed = nets if sampler == "ddim" else nets[:1]
            firsts = []
            for _, net, amp in timed:
                start = time.perf_counter()
                run(net, amp)                                    # includes compilation, the first time
                _sync(device)
                firsts.append(time.perf_counter() - start)
            medians = median_times([lambda net=net, amp=amp, run=run: run(net, amp) for _, net, amp in timed],
                                   device, repeats, warmup=1)
            for (label, _, amp), first, seconds in zip(timed, firsts, medians):
                rows.append({"section": "sampling", "model": f"U-Net {cfg.image_size[0]}px, guidance 3", "sampler": sampler,
                             "steps": steps, "batch": batch, "compile": label != "eager", "network_call": label,
                             "amp": amp, "images_per_s": batch / seconds, "network_s": seconds - loop,
                             "total_s": seconds, "overhead": loop / seconds, "first_run_s": first})


def bench_scaling(rows: list, base_cfg, device, repeats: int, batches=(8, 32), sizes=(32, 64)) -> None:
    for size in sizes:
        # Attention at every level's resolution down to 8 px, so the quadratic term shows.
        cfg = replace(base_cfg, image_size=(size, size), attention_resolutions=(size // 2, size // 4))
        for batch in batches:
            step, loss_fn, params = make_step("unet", cfg, batch, device, False, False, False)
            memory = activation_bytes(loss_fn, params)
            seconds = median_time(step, device, repeats, warmup=1)
            rows.append({"section": "scaling", "model": f"U-Net {size}px", "batch": batch,
                         "images_per_s": batch / seconds, "activation_MiB": memory / 2**20,
                         "activation_MiB_per_image": memory / 2**20 / batch})


def profile_step(step, device, steps: int = 3, top: int = 12) -> list[dict]:
    """Where a training step's time goes: torch.profiler over a few steps, ops sorted by their
    own (self) time, as shares of the total."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"op": e.key, "share": getattr(e, attr) / total, "ms_per_step": getattr(e, attr) / 1000 / steps,
             "calls_per_step": e.count / steps} for e in events[:top]]


def other_settings(row: dict) -> str:
    """The CUDA settings of a training row, in words."""
    words = [("whole step, CUDA graphs" if row.get("mode") == "reduce-overhead" else "whole step") if row.get("mode") else "",
             "fused AdamW" if row.get("fused") else "", "cudnn.benchmark" if row.get("cudnn_benchmark") else "",
             "TF32" if row.get("tf32") else ""]
    return ", ".join(w for w in words if w) or "-"


def markdown(report: dict) -> str:
    m = report["machine"]
    yes = lambda flag: "yes" if flag else "no"
    out = [f"Device: {m['device']}, {m['threads']} threads, torch {m['torch']}. Measured matmul peak: "
           f"fp32 {m['peak_fp32_tflops']:.3f} TFLOP/s" + (f", TF32 {m['peak_tf32_tflops']:.1f}" if m.get("peak_tf32_tflops") else "")
           + (f", bf16 {m['peak_bf16_tflops']:.1f} TFLOP/s" if m.get("peak_bf16_tflops") else "") + ".", ""]
    train = [r for r in report["rows"] if r["section"] == "train"]
    if train:
        out += ["| model | batch | compile | bf16 | channels-last | other | images/s | achieved TFLOP/s | of peak (its dtype) | compile s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['batch']} | {yes(r['compile'])} | {yes(r['amp'])} | {yes(r['channels_last'])} | "
                f"{other_settings(r)} | {r['images_per_s']:.1f} | {r['tflops']:.4f} | {r['fraction_of_peak']:.0%} | "
                f"{'-' if r['compile_s'] is None else format(r['compile_s'], '.0f')} |" for r in train]
        out.append("")
    sampling = [r for r in report["rows"] if r["section"] == "sampling"]
    if sampling:
        out += ["| sampler | steps | batch | network call | bf16 | images/s | network s | total s | sampler's own share (loop, schedule, noise) | first run s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['sampler']} ({r['model']}) | {r['steps']} | {r['batch']} | {r['network_call']} | {yes(r['amp'])} | "
                f"{r['images_per_s']:.2f} | {r['network_s']:.3f} | {r['total_s']:.3f} | {r['overhead']:.1%} | "
                f"{r['first_run_s']:.1f} |" for r in sampling]
        out.append("")
    if report.get("profile"):
        out += [f"Where the time of one {report['profile']['model']} training step goes (torch.profiler, self time):", "",
                "| op | share | ms per step | calls per step |", "|---|---|---|---|"]
        out += [f"| `{r['op']}` | {r['share']:.1%} | {r['ms_per_step']:.1f} | {r['calls_per_step']:.0f} |"
                for r in report["profile"]["ops"]]
        out.append("")
    scaling = [r for r in report["rows"] if r["section"] == "scaling"]
    if scaling:
        out += ["| model | batch | images/s | activation MiB | MiB per image |", "|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['batch']} | {r['images_per_s']:.1f} | {r['activation_MiB']:.1f} | "
                f"{r['activation_MiB_per_image']:.2f} |" for r in scaling]
    return "\n".join(out)


def measure_peaks(device, smoke: bool, repeats: int) -> dict:
    """The matmul peaks in TFLOP/s: fp32 everywhere; TF32 and bf16 on CUDA."""
    sizes = (256,) if smoke else (512, 1024, 2048)
    peaks = {"peak_fp32_tflops": matmul_peak(device, torch.float32, sizes, repeats) / 1e12}
    if device.type == "cuda":
        big = (2048, 4096, 8192)
        peaks["peak_tf32_tflops"] = matmul_peak(device, torch.float32, big, repeats, tf32=True) / 1e12
        peaks["peak_bf16_tflops"] = matmul_peak(device, torch.bfloat16, big, repeats) / 1e12
    return peaks


def finish(rows: list, machine: dict, peaks_again: dict) -> None:
    """The peaks once more at the end, keeping the better (a busy moment at the start must not
    make the models look faster than the machine), and each training row against the peak of
    its arithmetic: bf16, TF32 or fp32."""
    for key, value in peaks_again.items():
        machine[key] = max(machine[key], value)
    for r in rows:
        if r["section"] == "train":
            key = "peak_bf16_tflops" if r["amp"] else "peak_tf32_tflops" if r.get("tf32") else "peak_fp32_tflops"
            r["fraction_of_peak"] = r["tflops"] / machine[key]


def gpu_rows(rows: list, device, repeats: int, deadline: float, only=("train", "sampling", "batch scaling")) -> None:
    """The `cifar` U-Net (38.3M parameters, 32 px) on a GPU: which CUDA settings pay, what
    torch.compile and CUDA graphs give, batch scaling, and sampling at batch 16. A section that
    would start after `deadline` (time.monotonic()) is skipped, and says so."""
    cfg = unet.preset("cifar", num_classes=10)
    fast = {"amp": True, "channels_last": True, "fused": True, "cudnn_benchmark": True}
    def train():
        bench_train(rows, "unet", "U-Net cifar (32px)", cfg, 128, device, repeats, [
            {}, {"tf32": True}, {"tf32": True, "channels_last": True}, {"amp": True, "channels_last": True},
            {**fast, "fused": False}, {**fast, "cudnn_benchmark": False}, fast,
            {**fast, "mode": "default"}, {**fast, "mode": "reduce-overhead"}])

    def sampling():
        torch.backends.cudnn.benchmark = True
        graphs = ("CUDA graphs, frozen", {"freezing": True, "triton.cudagraphs": True}, True)
        graphs_plain = ("CUDA graphs", {"triton.cudagraphs": True}, True)     # = mode="reduce-overhead"
        bench_sampling(rows, cfg, 16, device, repeats, (50,), samplers=("ddim",),
                       variants=(EAGER, ("eager", None, True), ("compiled", {"freezing": True}, True), graphs, graphs_plain))

    def scaling():
        for batch in (32, 512):
            bench_train(rows, "unet", "U-Net cifar (32px)", cfg, batch, device, repeats,
                        [fast] + ([{**fast, "mode": "reduce-overhead"}] if batch == 512 else []))

    sections = [("train", train), ("sampling", sampling), ("batch scaling", scaling)]
    shown = 0
    for name, run in [(name, run) for name, run in sections if name in only]:
        if time.monotonic() > deadline:
            print(f"skipped {name}: past --budget-s", flush=True)
            continue
        start = time.monotonic()
        run()
        print(f"{name} done in {time.monotonic() - start:.0f} s", flush=True)
        for r in rows[shown:]:
            print(r, flush=True)
        shown = len(rows)


def default_rows(rows: list, args, device, repeats: int) -> None:
    """The default table: every model's training step, sampling and scaling (tiny models with --smoke)."""
    cuda = device.type == "cuda"
    compile_rows = not (args.smoke or args.quick)
    base = [{}, {"channels_last": True}] + ([{"compile": True}, {"compile": True, "channels_last": True}] if compile_rows else [])
    if cuda:
        base += [{"amp": True, "channels_last": True}] + ([{"amp": True, "channels_last": True, "compile": True}] if compile_rows else [])
    if args.smoke:
        models = [("unet", "U-Net tiny", unet.preset("tiny", num_classes=10), 4),
                  ("dcgan", "DCGAN tiny", dcgan.preset("tiny"), 8), ("vit", "ViT tiny", vit.preset("tiny"), 8)]
    else:
        models = [("unet", "U-Net cpu (28px)", unet.preset("cpu", num_classes=10), 64),
                  ("unet", "U-Net cifar (32px)", unet.preset("cifar", num_classes=10), 128 if cuda else 8),
                  ("dcgan", "DCGAN cpu (28px)", dcgan.preset("cpu"), 64), ("vit", "ViT cpu (28px)", vit.preset("cpu"), 128)]
    if args.unet_only:
        models = models[:1]
    for kind, name, cfg, batch in models:
        variants = base if kind == "unet" else [v for v in base if not v.get("channels_last") or v.get("amp")]
        if name.startswith("U-Net cifar") and not cuda:
            variants = [{}, {"channels_last": True}]             # the GPU preset, eager only on a CPU
        if name.startswith("U-Net cpu"):   # and without dropout, whose random masks cost eager and compile most
            variants = variants + [{**v, "dropout": 0.0} for v in variants if v.get("channels_last")]
        bench_train(rows, kind, name, cfg, batch, device, repeats, variants)
        for r in rows[-len(variants):]:
            print(f"train  {r['model']:30s} compile={r['compile']!s:5} amp={r['amp']!s:5} cl={r['channels_last']!s:5} "
                  f"{r['images_per_s']:8.1f} img/s", flush=True)
    if not args.unet_only:
        sample_cfg = unet.preset("tiny" if args.smoke else "cpu", num_classes=10)
        bench_sampling(rows, sample_cfg, 4 if args.smoke else 16, device, repeats, (2, 4) if args.smoke else (10, 50),
                       variants=(EAGER, COMPILED) if compile_rows else (EAGER,))
        scale_cfg = unet.preset("tiny", channel_mults=(1, 2, 2)) if args.smoke else unet.preset("cpu", channel_mults=(1, 2, 2))
        bench_scaling(rows, scale_cfg, device, repeats, batches=(2, 4) if args.smoke else (8, 32),
                      sizes=(16, 32) if args.smoke else (32, 64))


GPU_SECTIONS = ("train", "sampling", "batch scaling")


def sections_of(text: str) -> list[str]:
    """--sections: names of GPU_SECTIONS, comma-separated."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in GPU_SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))}: the sections are {', '.join(GPU_SECTIONS)}")
    return names


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.evaluation.bench", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and few repeats: seconds, for tests")
    parser.add_argument("--quick", action="store_true", help="skip the torch.compile rows and use fewer repeats")
    parser.add_argument("--profile-only", action="store_true",
                        help="only profile the default U-Net training step (where its time goes)")
    parser.add_argument("--compiled", action="store_true",
                        help="with --profile-only: profile the torch.compile'd step, each generated kernel by name")
    parser.add_argument("--unet-only", action="store_true",
                        help="only the default U-Net's training rows (eager and compiled, NCHW and channels-last)")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="set a torch._inductor.config option for the compiled rows, e.g. fallback_random=True "
                             "(repeatable): to measure what a compiler setting is worth")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU table: the cifar U-Net's training step under each CUDA setting (fp32, TF32, "
                             "bf16, channels-last, fused AdamW, cudnn.benchmark, compiled, CUDA graphs), batch "
                             "scaling, and DDIM sampling at batch 16 eager, compiled and CUDA-graphed")
    parser.add_argument("--budget-s", type=number(float, positive), default=None,
                        help="with --gpu: skip the sections that would start after this many seconds")
    parser.add_argument("--sections", default="train,sampling,batch scaling", type=sections_of,
                        help="with --gpu: which sections, comma-separated (default: all three)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--out", default="runs/bench", help="folder for bench.md and bench.json (default: runs/bench)")
    args = parser.parse_args(argv)
    out = writable_folder(args.out)                         # before minutes of timing, not after them
    device, _ = pick_device(args.device, tf32=False)
    cuda = device.type == "cuda"
    if args.gpu and not cuda:
        parser.error("--gpu needs a CUDA device")
    repeats = 2 if args.smoke else (3 if args.quick else 5)
    torch.manual_seed(0)
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = False   # cold compiles: the on-disk cache would hide compile time on reruns
    for option in args.inductor:
        key, _, value = option.partition("=")
        if not hasattr(inductor_config, key):
            parser.error(f"--inductor {option}: torch._inductor.config has no option {key!r}")
        setattr(inductor_config, key, ast.literal_eval(value))

    peaks = measure_peaks(device, args.smoke, repeats)
    machine = {"device": torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)",
               "threads": torch.get_num_threads(), "torch": torch.__version__, **peaks}
    print(f"machine: {machine}", flush=True)

    rows: list = []
    profile = None
    if args.gpu:
        gpu_rows(rows, device, repeats, time.monotonic() + (args.budget_s or float("inf")), args.sections)
    elif args.profile_only or not args.unet_only:
        profile_cfg = unet.preset("tiny" if args.smoke else "cpu", num_classes=10)
        profile_name = ("U-Net tiny" if args.smoke else "U-Net cpu (28px, batch 64, channels-last)") + (", compiled" if args.compiled else "")
        if args.compiled:   # name each of inductor's generated C++ kernels in the profile, not only the graph
            inductor_config.cpp.enable_kernel_profile = True
        step, _, _ = make_step("unet", profile_cfg, 4 if args.smoke else 64, device, True, False, args.compiled)
        profile = {"model": profile_name, "ops": profile_step(step, device, steps=1 if args.smoke else 3)}
        for r in profile["ops"]:
            print(f"profile {r['op']:40s} {r['share']:6.1%} {r['ms_per_step']:8.1f} ms/step", flush=True)
    if args.profile_only:
        print(markdown({"machine": machine, "rows": [], "profile": profile}))
        return 0
    if not args.gpu:
        default_rows(rows, args, device, repeats)

    finish(rows, machine, measure_peaks(device, args.smoke, repeats))
    report = {"machine": machine, "rows": rows, "profile": profile, "command": " ".join(["python -m minigen.evaluation.bench", *(sys.argv[1:] if argv is None else argv)])}
    table = markdown(report)
    (out / "bench.md").write_text(table + "\n")
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print("\n" + table + f"\n\nwrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
