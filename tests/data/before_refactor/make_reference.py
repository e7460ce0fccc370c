"""Record bits from the pre-refactor code: checkpoints trained by the scripts and samples drawn
from them through every sampler path. Run once, before the architecture change, at commit
4399076; it uses that code's API (Diffusion.sample, sample.load_ddpm, minigen.editing) and is
kept as the record of how the references were made, not to be run again."""
import json, os, subprocess, sys
from pathlib import Path
import torch
ROOT = Path("/work/main"); sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "data" / "before_refactor"
OUT.mkdir(parents=True, exist_ok=True)
os.environ["MINIGEN_CACHE"] = "/tmp/ref/cache"
work = Path("/tmp/ref/runs")
def run(*a):
    r = subprocess.run([sys.executable, *a], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
common = ["--preset", "tiny", "--batch-size", "8", "--log-every", "1", "--sample-every", "0"]
if not (work / "ddpm/last.pt").exists():
    run("train_ddpm.py", *common, "--steps", "8", "--warmup", "2", "--sample-steps", "2", "--out", str(work / "ddpm"))
    run("train_ddpm.py", *common, "--steps", "8", "--warmup", "2", "--sample-steps", "2", "--dataset", "shapes",
        "--image-size", "16", "--prediction", "v", "--T", "200", "--schedule", "cosine", "--out", str(work / "v"))
    run("train_gan.py", *common, "--steps", "8", "--out", str(work / "gan"))
    run("train_vit.py", "--preset", "tiny", "--batch-size", "8", "--log-every", "1", "--steps", "8", "--eval-every", "0",
        "--noisy", "--out", str(work / "vit"))

from minigen.checkpoint import load_checkpoint
from minigen.editing import colour_loss, inpaint, sdedit
from minigen.vit import ViT, ViTConfig
from minigen.latent import slerp
import sample as S
dev = torch.device("cpu")
model, d, classes = S.load_ddpm(load_checkpoint(work / "ddpm/last.pt"), dev)
vmodel, vd, _ = S.load_ddpm(load_checkpoint(work / "v/last.pt"), dev)
vs = load_checkpoint(work / "vit/last.pt"); clf = ViT(ViTConfig(**vs["config"])); clf.load_state_dict(vs["model"]); clf.eval()
G, D, _ = S.load_gan(load_checkpoint(work / "gan/last.pt"), dev)
g = lambda s: torch.Generator().manual_seed(s)
y = torch.tensor([0, 3, 7, 9]); ref = {}
x, inter = d.sample(model, (4, 1, 28, 28), steps=6, generator=g(1), y=y, guidance=3.0, null_label=10,
                    return_intermediates=True, progress=False)
ref["ddim_cfg"] = x; ref["ddim_cfg_t"] = torch.tensor(inter["t"]); ref["ddim_cfg_x_t"] = inter["x_t"]; ref["ddim_cfg_x0"] = inter["x0_pred"]
ref["ddim_eta_leading_dyn_neg"] = d.sample(model, (4, 1, 28, 28), steps=5, eta=0.5, spacing="leading", generator=g(2), y=y,
                    guidance=2.0, null_label=10, negative_y=torch.tensor([1, 1, 1, 1]), dynamic_threshold=0.9, progress=False)
ref["ddpm_large_noclip"] = d.sample(model, (4, 1, 28, 28), sampler="ddpm", steps=7, variance="large", clip_x0=False,
                    spacing="linspace", generator=g(3), y=y, progress=False)
ref["ddpm_uncond_null"] = d.sample(model, (2, 1, 28, 28), sampler="ddpm", steps=4, generator=g(4), progress=False)
ref["ddim_classifier"] = d.sample(model, (4, 1, 28, 28), steps=5, generator=g(5), y=y, guidance=3.0, null_label=10,
                    classifier=clf, classifier_scale=2.0, progress=False)
ref["v_colour"] = vd.sample(vmodel, (3, 3, 16, 16), steps=6, generator=g(6), loss_fn=colour_loss([1.0, -1.0, -1.0]),
                    loss_scale=20.0, progress=False)
ref["v_colour_ddpm"] = vd.sample(vmodel, (3, 3, 16, 16), sampler="ddpm", steps=5, generator=g(6), y=torch.tensor([0, 1, 2]),
                    guidance=2.0, null_label=vmodel.config.num_classes, loss_fn=colour_loss([1.0, -1.0, -1.0]), loss_scale=5.0, progress=False)
image = torch.linspace(-1, 1, 28 * 28).reshape(1, 1, 28, 28)
keep = torch.ones(1, 1, 28, 28); keep[..., 8:20, 8:20] = 0
ref["inpaint"] = inpaint(d, model, image.expand(2, -1, -1, -1), keep, steps=12, jump_length=4, resample=1, generator=g(7),
                    y=torch.tensor([2, 2]), guidance=3.0, null_label=10, progress=False)
ref["sdedit"] = sdedit(d, model, image.expand(2, -1, -1, -1), 0.5, steps=10, generator=g(8), y=torch.tensor([4, 4]),
                    guidance=3.0, null_label=10, progress=False)
x_T = d.ddim_invert(model, image, steps=8, y=torch.tensor([10]), refine=2, progress=False)
ref["invert_x_T"] = x_T
ref["invert_back"] = d.sample(model, image.shape, steps=8, x_T=x_T, y=torch.tensor([10]), clip_x0=False, progress=False)
ref["invert_edit"] = d.sample(model, image.shape, steps=8, x_T=x_T, y=torch.tensor([5]), guidance=3.0, null_label=10, progress=False)
ref["gan"], _ = S.gan_samples(G, D, y, 4, g(9), dev, None)
ref["gan_filtered"], drawn = S.gan_samples(G, D, y, 4, g(10), dev, 0.3)
ref["gan_filtered_drawn"] = torch.tensor(drawn)
ends = torch.randn(2, 16, generator=g(11))
with torch.no_grad():
    ref["gan_slerp"] = G(slerp(ends[0], ends[1], torch.linspace(0, 1, 5)), torch.full((5,), 3))
for name in ("ddpm", "v", "gan", "vit"):
    ref[f"metrics_{name}"] = [json.loads(l) for l in (work / name / "metrics.jsonl").read_text().splitlines()]
    for l in ref[f"metrics_{name}"]:
        for k in ("images_per_s", "rss_mib"): l.pop(k, None)
ref["torch_version"] = str(torch.__version__)
torch.save(ref, OUT / "samples.pt")
for name in ("ddpm", "v", "gan", "vit"):
    st = torch.load(work / name / "last.pt", weights_only=True)
    st.pop("optimizer", None); st.pop("scheduler", None)
    if name == "gan": st["others"].pop("optimizer_d")
    torch.save(st, OUT / f"{name}.pt")
print({k: (tuple(v.shape) if torch.is_tensor(v) else len(v)) for k, v in ref.items()})
