"""Bad input never costs a traceback, a silent wrong result or a lost run.

A table of bad values for every script's flags: each is refused with exit status 2 and one
line on stderr that names the flag, before anything is written to --out. Then the run's own
guards: one run per output folder, stale temporaries and log rows of a killed run, and the
odd data a careless user brings (a folder with few images, patches that do not tile)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import edit
import evaluate
import sample
import distill
import train_clip
import train_ddpm
import train_gan
import train_ldm
import train_vae
import train_vit
from minigen.data import __main__ as data_cli
from minigen.evaluation import bench, grain, judges, latent_bench, prompts
from minigen.training.runlog import read_log

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "before_refactor"          # a tiny diffusion model, GAN and ViT
SCRIPTS = {"train_ddpm.py": train_ddpm, "train_ldm.py": train_ldm, "train_gan.py": train_gan, "train_vit.py": train_vit,
           "train_vae.py": train_vae, "sample.py": sample, "edit.py": edit, "evaluate.py": evaluate, "prompts": prompts, "latent_bench": latent_bench,
           "bench": bench, "train_clip.py": train_clip, "distill.py": distill, "grain": grain, "data": data_cli, "judges": judges}

BAD = [
    ("train_ddpm.py", ["--batch-size", "0"], "--batch-size"),
    ("train_ddpm.py", ["--batch-size", "-4"], "--batch-size"),
    ("train_ddpm.py", ["--lr", "-1"], "--lr"),
    ("train_ddpm.py", ["--lr", "nan"], "--lr"),
    ("train_ddpm.py", ["--T", "0"], "--T"),
    ("train_ddpm.py", ["--steps", "0"], "--steps"),
    ("train_ddpm.py", ["--warmup", "-1"], "--warmup"),
    ("train_ddpm.py", ["--cond-drop", "1.5"], "--cond-drop"),
    ("train_ddpm.py", ["--ema-decay", "2"], "--ema-decay"),
    ("train_ddpm.py", ["--min-snr", "-1"], "--min-snr"),
    ("train_ddpm.py", ["--dropout", "1"], "--dropout"),
    ("train_ddpm.py", ["--grad-clip", "-1"], "--grad-clip"),
    ("train_ddpm.py", ["--sample-steps", "0"], "--sample-steps"),
    ("train_ddpm.py", ["--sample-steps", "2000"], "--sample-steps"),
    ("train_ddpm.py", ["--guidance", "inf"], "--guidance"),
    ("train_ddpm.py", ["--log-every", "0"], "--log-every"),
    ("train_ddpm.py", ["--ckpt-every", "0"], "--ckpt-every"),
    ("train_ddpm.py", ["--stop-after", "0"], "--stop-after"),
    ("train_ddpm.py", ["--image-size", "0"], "--image-size"),
    ("train_ddpm.py", ["--channels", "2"], "--channels"),
    ("train_ddpm.py", ["--schedule", "bogus"], "--schedule"),
    ("train_ddpm.py", ["--prediction", "noise"], "--prediction"),
    ("train_ddpm.py", ["--preset", "huge"], "--preset"),
    ("train_ddpm.py", ["--attention", "5"], "--attention"),               # no level of the U-Net is 5 wide
    ("train_ddpm.py", ["--attention", "7;14"], "--attention"),
    ("train_ddpm.py", ["--device", "bogus"], "--device"),
    ("train_ddpm.py", ["--dataset", "folder:/no/such/folder", "--image-size", "8"], "no such folder"),
    ("train_ddpm.py", ["--cuda-graphs"], "--cuda-graphs"),                 # needs --compile and CUDA
    ("train_ddpm.py", ["--cuda-graphs", "--compile"], "--cuda-graphs"),    # CUDA (tests run on a CPU)
    ("train_ddpm.py", ["--replay", "0"], "--replay"),
    ("train_ddpm.py", ["--replay", "5"], "--replay"),                   # without --only-classes
    ("train_ddpm.py", ["--autoencoder", "vae.pt"], "train_ldm.py"),       # the flags that moved: one line naming it
    ("train_ldm.py", [], "--autoencoder VAE_CKPT"),
    ("train_ldm.py", ["--autoencoder", "vae.pt", "--condition", "text", "--flip"], "--flip"),
    ("train_ldm.py", ["--autoencoder", "vae.pt", "--freeze-text", "--condition", "text"], "--freeze-text"),
    ("train_ldm.py", ["--autoencoder", "vae.pt", "--text-encoder", "clip.pt"], "--text-encoder"),
    ("train_ldm.py", ["--autoencoder", "vae.pt", "--condition", "words"], "--condition"),
    ("train_gan.py", ["--real-label", "5"], "--real-label"),
    ("train_gan.py", ["--real-label", "0"], "--real-label"),
    ("train_gan.py", ["--flip-prob", "-0.1"], "--flip-prob"),
    ("train_gan.py", ["--diffaug", "bogus"], "--diffaug"),
    ("train_gan.py", ["--lr-g", "0"], "--lr-g"),
    ("train_gan.py", ["--beta1", "1"], "--beta1"),
    ("train_gan.py", ["--image-size", "48"], "--image-size"),
    ("train_gan.py", ["--batch-size", "0"], "--batch-size"),
    ("train_vit.py", ["--noise-T", "0"], "--noise-T"),
    ("train_vit.py", ["--label-smoothing", "2"], "--label-smoothing"),
    ("train_vit.py", ["--shift", "-1"], "--shift"),
    ("train_vit.py", ["--eval-every", "-1"], "--eval-every"),
    ("sample.py", ["--steps", "0"], "--steps"),
    ("sample.py", ["--steps", "5000"], "--steps"),
    ("sample.py", ["-n", "0"], "-n"),
    ("sample.py", ["-n", "-2"], "-n"),
    ("sample.py", ["--guidance", "nan"], "--guidance"),
    ("sample.py", ["--guidance", "inf"], "--guidance"),
    ("sample.py", ["--eta", "2"], "--eta"),
    ("sample.py", ["--guidance-interval", "5,1"], "--guidance-interval"),
    ("sample.py", ["--guidance-interval", "1"], "--guidance-interval"),
    ("sample.py", ["--guidance-rescale", "1.5"], "--guidance-rescale"),
    ("sample.py", ["--dynamic-threshold", "0"], "--dynamic-threshold"),
    ("sample.py", ["--min-d-prob", "2"], "--min-d-prob"),
    ("sample.py", ["--interpolate", "1"], "--interpolate"),
    ("sample.py", ["--class", "12"], "--class"),
    ("sample.py", ["--negative-class", "-1"], "--negative-class"),
    ("edit.py", ["--init", "IMAGE", "--class", "1", "--strength", "0.0001"], "strength 0.0001: less than one step"),
    ("edit.py", ["--inpaint", "IMAGE", "--class", "1", "--jump-length", "0"], "--jump-length"),
    ("edit.py", ["--inpaint", "IMAGE", "--class", "1", "--mask-box", "0,0,4"], "--mask-box"),
    ("sample.py", ["--inpaint", "IMAGE", "--class", "1"], "edit.py --ckpt CKPT --inpaint"),
    ("sample.py", ["--color-scale", "nan", "--color-target", "1"], "--color-scale"),
    ("sample.py", ["--classifier", str(OLD / "ddpm.pt")], "'ddpm' checkpoint"),
    ("sample.py", ["--ckpt", str(OLD / "v.pt"), "--classifier", str(OLD / "vit.pt")], "--classifier"),
    ("sample.py", ["--device", "bogus"], "--device"),
    ("sample.py", ["--cuda-graphs"], "--cuda-graphs"),
    ("sample.py", ["--sampler", "dpm++", "--eta", "0.5"], "--eta"),
    ("evaluate.py", ["-n", "5"], "-n"),
    ("evaluate.py", ["--ddim-steps", "0"], "--ddim-steps"),
    ("evaluate.py", ["--ddim-steps", "10,x"], "--ddim-steps"),
    ("evaluate.py", ["--guidance", "nan"], "--guidance"),
    ("evaluate.py", ["--cas-steps", "0"], "--cas-steps"),
    ("evaluate.py", ["--ddpm-n", "0"], "--ddpm-n"),
    ("evaluate.py", ["--ddpm", str(OLD / "ddpm.pt"), "--ddpm-steps", "2000"], "2000 steps"),
    # upper bounds, checked before any work: a value past them fails late or draws only black and white
    ("train_ddpm.py", ["--seed", str(2**64)], "--seed"),
    ("train_ddpm.py", ["--steps", str(2**70)], "--steps"),                 # would train for ever
    ("train_gan.py", ["--steps", str(10**10)], "--steps"),
    ("train_vae.py", ["--steps", str(10**10)], "--steps"),
    ("train_vit.py", ["--steps", str(10**10)], "--steps"),
    ("train_clip.py", ["--steps", str(10**10)], "--steps"),
    ("distill.py", ["--steps-per-round", str(10**10)], "--steps-per-round"),
    ("evaluate.py", ["--cas-steps", str(10**10)], "--cas-steps"),
    ("sample.py", ["--ckpt", str(OLD / "gan.pt"), "--min-d-prob", "0.5", "--image-seeds"], "--min-d-prob"),
    ("sample.py", ["--seed", str(2**32 - 2), "-n", "4", "--image-seeds"], "past 4294967295"),
    ("train_gan.py", ["--seed", "-1"], "--seed"),
    ("train_ddpm.py", ["--T", "100000000"], "--T"),
    ("train_ddpm.py", ["--guidance", "1e12"], "--guidance"),
    ("train_ddpm.py", ["--image-size", "100000", "--dataset", "shapes"], "--image-size"),
    ("train_vit.py", ["--noise-T", "100000000"], "--noise-T"),
    ("sample.py", ["--seed", str(2**64)], "--seed"),
    ("sample.py", ["-n", "100000000"], "-n"),
    ("sample.py", ["--guidance", "1e12"], "--guidance"),
    ("sample.py", ["--color-scale", "1e12", "--color-target", "1"], "--color-scale"),
    ("sample.py", ["--interpolate", "1000000"], "--interpolate"),
    ("sample.py", ["--device", "meta"], "--device"),
    ("sample.py", ["--color-target", ""], "--color-target"),
    ("sample.py", ["--prompts-file", "/dev/zero"], "--prompts-file /dev/zero: longer than 1 MiB"),
    ("train_vae.py", ["--preset", "f8"], "does not divide by 8"),
    ("sample.py", ["--gif", "--out", "OUT/grid.gif"], "the grid and the GIF would be the same file"),
    ("sample.py", ["--device", "mps"], "--device"),
    ("edit.py", ["--inpaint", "IMAGE", "--class", "1", "--resample", "100000"], "--resample"),
    ("evaluate.py", ["--seed", str(2**64)], "--seed"),
    ("evaluate.py", ["--guidance", "1e12"], "--guidance"),
    ("evaluate.py", ["-n", "100000000"], "-n"),
    ("evaluate.py", ["--ddim-steps", "5000"], "--ddim-steps sets the diffusion rows: give --ddpm CKPT"),   # not ignored
    # the evaluation modules, to the scripts' standard
    ("prompts", ["-n", "0"], "-n"),
    ("prompts", ["--steps", "0"], "--steps"),
    ("prompts", ["--guidance", "nan"], "--guidance"),
    ("prompts", ["--seed", str(2**64)], "--seed"),
    ("prompts", ["--ckpt", "/no/such.pt"], "no such checkpoint file"),
    ("prompts", ["--ckpt", str(OLD / "gan.pt")], "'gan' checkpoint"),
    ("latent_bench", ["--repeats", "0"], "--repeats"),
    ("latent_bench", ["--batch", "0"], "--batch"),
    ("latent_bench", ["--steps", "0"], "--steps"),
    ("latent_bench", ["--pixel", "/no/such.pt"], "no such checkpoint file"),
    ("bench", ["--device", "meta"], "--device"),
    ("bench", ["--budget-s", "-1"], "--budget-s"),
    ("bench", ["--sections", "train,tests"], "'tests': the sections are train, sampling, batch scaling"),
    # an empty value is refused, not read as "not given" (an unset shell variable)
    ("sample.py", ["--ckpt", ""], "argument --ckpt: an empty value"),
    ("sample.py", ["--save-dir", ""], "argument --save-dir: an empty value"),
    ("train_ddpm.py", ["--init-from", ""], "argument --init-from: an empty value"),
    ("evaluate.py", ["--vae", ""], "argument --vae: an empty value"),
    ("data", ["show", "glyphs", "--root", ""], "argument --root: an empty value"),
    ("train_ddpm.py", ["--image-size", "27"], "is not divisible by 2"),
    ("train_clip.py", ["--max-len", "100000"], "--max-len"),
    ("train_clip.py", ["--contrast", "bogus"], "--contrast bogus"),
    ("train_clip.py", ["--seed", "-1"], "--seed"),
    ("distill.py", ["--start-steps", "0"], "--start-steps"),
    ("distill.py", ["--teacher", str(OLD / "gan.pt")], "'gan' checkpoint"),
    ("distill.py", ["--teacher", str(OLD / "ddpm.pt")], "predicts ε"),              # an ε teacher
    ("grain", ["-n", "0"], "-n"),
    ("grain", ["--guidance", "1e12"], "--guidance"),
    ("grain", ["--device", "meta"], "--device"),
    ("grain", ["--ckpt", "/no/such.pt"], "no such checkpoint file"),
    ("data", ["show", "bogus"], "unknown data set 'bogus'"),
    ("judges", [], "--samples CKPT (measured) or --blur SIGMA"),
    ("judges", ["--blur", "9"], "--blur"),
    ("judges", ["--blur", "1", "--judge", str(OLD / "vit.pt")], "not an attribute classifier of captioned-shapes"),
    ("judges", ["--blur", "1", "--max-fooled", "2"], "--max-fooled"),
    ("data", ["show", "glyphs", "-n", "0"], "-n"),
    ("data", ["show", "glyphs", "--seed", str(2**64)], "--seed"),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "gray.png"
    Image.new("L", (28, 28), 128).save(path)
    return path


def invoke(script: str, args: list[str], out: Path, image: Path | None = None) -> int:
    """The script's main, in this process (as `python script.py ...` runs it), with --out set."""
    args = [str(image) if a == "IMAGE" else str(out.parent / a[4:]) if a.startswith("OUT/") else a for a in args]
    if script in ("sample.py", "edit.py"):
        args = ["--ckpt", str(OLD / "ddpm.pt"), "--no-progress", "--out", str(out / "x.png"), *args]
    elif script == "evaluate.py":
        args = ["--judge", str(OLD / "vit.pt"), "--out", str(out), *args]
    elif script == "prompts":
        args = ["--ckpt", str(OLD / "ddpm.pt"), "--judge", str(OLD / "vit.pt"), "--out", str(out), *args]
    elif script == "latent_bench":
        args = ["--pixel", str(OLD / "ddpm.pt"), "--latent", str(OLD / "ddpm.pt"), "--out", str(out), *args]
    elif script == "bench":
        args = ["--smoke", "--out", str(out), *args]
    elif script == "distill.py":
        args = ["--teacher", str(OLD / "v.pt"), "--out", str(out), *args]
    elif script == "grain":
        args = [*(["--ckpt", str(OLD / "v.pt")] if "--ckpt" not in args else []), *args]
    elif script == "judges":
        args = ["--out", str(out), *args]
    elif script == "data":
        args = [*args[:2], "--out", str(out / "grid.png"), *args[2:]] if args[0] == "show" else args
    else:
        args = ["--preset", "tiny", "--steps", "2", "--out", str(out), *args]
    return SCRIPTS[script].run(SCRIPTS[script].main, args)


@pytest.mark.parametrize("script,args,flag", BAD, ids=[f"{s}:{' '.join(a)}" for s, a, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_flag_and_nothing_is_written(tmp_path, capsys, image, script, args, flag):
    out = tmp_path / "out"
    assert invoke(script, args, out, image) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and flag in err, err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


@pytest.mark.parametrize("out,message", [
    ("{tmp}", "is a folder"),
    ("{tmp}/samples.xyz", "unknown image type"),
    ("{file}/samples.png", "is a file, not a folder"),
    ("/proc/minigen-test/samples.png", "cannot write there"),
])
def test_sample_py_checks_its_output_path_before_sampling(tmp_path, capsys, out, message):
    (tmp_path / "a_file").write_text("")
    out = out.format(tmp=tmp_path, file=tmp_path / "a_file")
    assert sample.run(sample.main, ["--ckpt", str(OLD / "ddpm.pt"), "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr()
    assert message in err.err and "device:" not in err.out      # refused before the model is even loaded


def test_a_resumed_run_refuses_a_conflicting_setting_by_name(tmp_path, capsys):
    common = ["--preset", "tiny", "--batch-size", "8", "--sample-every", "0", "--out", str(tmp_path)]
    assert train_ddpm.run(train_ddpm.main, [*common, "--steps", "2", "--sample-steps", "2"]) == 0
    capsys.readouterr()
    assert train_ddpm.run(train_ddpm.main, [*common, "--resume", "--steps", "3", "--preset", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "drop --preset cpu (the run has tiny)" in err and err.strip().count("\n") == 0


def test_a_code_carrying_checkpoint_is_named_as_such(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))
    torch.save({"format": 2, "kind": "ddpm", "x": Evil()}, tmp_path / "evil.pt")
    torch.save({"format": "2", "kind": "ddpm"}, tmp_path / "strange.pt")
    assert sample.run(sample.main, ["--ckpt", str(tmp_path / "evil.pt")]) == 2
    captured = capsys.readouterr()
    assert "carries pickled code (posix.system)" in captured.err and "never run" not in captured.out
    assert sample.run(sample.main, ["--ckpt", str(tmp_path / "strange.pt")]) == 2
    assert "not a minigen checkpoint (format '2'" in capsys.readouterr().err


def test_images_a_user_brings_palette_and_decompression_bomb(tmp_path):
    from minigen.data.readers import read_image
    from minigen.errors import DataError
    Image.new("RGB", (28, 28), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png", 3, (28, 28))[:, 0, 0].tolist() == [200, 0, 0]
    with pytest.raises(DataError, match="an RGB image, but the model makes grayscale"):
        read_image(tmp_path / "palette.png", 1, (28, 28))
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 28 * 28 // 4                  # a 28x28 image is then "too large" twice over
        Image.new("L", (28, 28)).save(tmp_path / "bomb.png")
        with pytest.raises(DataError, match="decompression-bomb limit"):
            read_image(tmp_path / "bomb.png", 1, (28, 28))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def run_script(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


def test_one_run_owns_an_output_folder_and_a_killed_one_leaves_it_free(tmp_path):
    out = tmp_path / "run"
    common = [ROOT / "train_gan.py", "--preset", "tiny", "--batch-size", "8", "--sample-every", "0",
              "--ckpt-every", "100000", "--out", out]
    first = run_script(*common, "--steps", "100000")
    try:
        for _ in range(600):                                     # until the first run holds the folder
            if (out / ".lock").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert (out / ".lock").exists(), first.communicate()[1] if first.poll() is not None else ""
        second = run_script(*common, "--steps", "2")
        out_text, err = second.communicate(timeout=120)
        assert second.returncode == 2 and f"is in use by another run (process {first.pid}" in err, err
        assert "data:" not in out_text and "model:" not in out_text      # refused before any work
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert (out / ".lock").exists()                              # kill -9 leaves it behind...
    (out / ".last.pt.12345.tmp").write_bytes(b"half a checkpoint")
    third = run_script(*common, "--steps", "2")                 # ...but its owner is gone: taken over
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert not (out / ".lock").exists() and not list(out.glob(".*.tmp"))


def test_a_lock_is_judged_by_its_process_and_one_from_another_host_says_how_to_clear_it(tmp_path, capsys):
    """A lock names a process by id, host and start time: an id now used by another process (here
    the test's own parent, alive, but with another start time) is no owner; a lock from another
    host cannot be checked, so the refusal names the lock file to delete."""
    import socket
    common = ["--preset", "tiny", "--batch-size", "8", "--steps", "1", "--sample-every", "0"]
    out = tmp_path / "reused"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getppid()} {socket.gethostname()} 1")
    assert train_gan.run(train_gan.main, [*common, "--out", str(out)]) == 0
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / ".lock").write_text("123 another-host 456")
    assert train_gan.run(train_gan.main, [*common, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "on another host, another-host" in err and f"delete {out / '.lock'}" in err, err


def test_a_new_run_starts_its_own_log_and_a_finished_runs_folder_stays_its_own(tmp_path, capsys):
    """Rows left by a run killed before its first checkpoint are not the next run's; and once a
    run has finished, a second run into its folder is refused, its checkpoint untouched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 99, "loss": 5.0}\n')
    common = ["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--log-every", "1", "--sample-every", "0",
              "--out", str(out)]
    assert train_gan.run(train_gan.main, common) == 0
    assert [row["step"] for row in read_log(out / "metrics.jsonl")] == [1, 2]
    before = (out / "last.pt").read_bytes()
    assert train_gan.run(train_gan.main, common) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before and not (out / ".lock").exists()


def test_a_resumed_run_continues_the_log_from_its_checkpoint(tmp_path, capsys):
    common = ["--preset", "tiny", "--batch-size", "8", "--steps", "4", "--log-every", "1", "--eval-every", "0",
              "--out", str(tmp_path)]
    assert train_vit.run(train_vit.main, [*common, "--stop-after", "2"]) == 0
    log = tmp_path / "metrics.jsonl"
    with open(log, "a") as f:                                   # rows a killed run wrote after its checkpoint
        f.write(json.dumps({"step": 3, "loss": 9.9}) + "\n" + '{"step": 4, "lo')
    assert train_vit.run(train_vit.main, [*common, "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 4]                             # the last row: the final test accuracy
    assert 9.9 not in [json.loads(line).get("loss") for line in log.read_text().splitlines()]


def image_folder(root: Path, n: int) -> Path:
    """n grayscale images of 32x32 in two classes, dark and light."""
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        name = ("dark", "light")[i % 2]
        (root / name).mkdir(parents=True, exist_ok=True)
        value = 60 if name == "dark" else 190
        pixels = (value + 20 * torch.randn(32, 32, generator=g)).clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_vit_on_a_small_folder_and_patches_that_do_not_tile(tmp_path, capsys):
    few = image_folder(tmp_path / "few", 25)                   # a test split of 3: fewer than the 8 drawn
    data = ["--channels", "1", "--batch-size", "4", "--eval-every", "0", "--preset", "tiny", "--image-size"]
    assert train_vit.run(train_vit.main, ["--dataset", f"folder:{few}", *data, "28", "--steps", "2",
                                          "--out", str(tmp_path / "few-run")]) == 0
    assert (tmp_path / "few-run" / "attention.png").is_file()
    assert evaluate.run(evaluate.main, ["--judge", str(tmp_path / "few-run" / "last.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "has 3 test images; the statistics need at least 10" in capsys.readouterr().err
    data = ["--dataset", f"folder:{image_folder(tmp_path / 'more', 105)}", *data[:-3]]
    assert train_vit.run(train_vit.main, ["--preset", "tiny", "--image-size", "32", *data, "--steps", "1",
                                          "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--preset tiny cuts images into 7x7 patches, which do not tile 32x32" in err
    assert not (tmp_path / "a").exists()
    assert train_vit.run(train_vit.main, ["--preset", "tiny", "--image-size", "28", *data, "--steps", "2",
                                          "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "attention.png").is_file()
    # A judge trained on a folder can judge: its test split is the same held-out tenth.
    assert evaluate.run(evaluate.main, ["--judge", str(tmp_path / "b" / "last.pt"), "-n", "10", "--cas-steps", "1",
                                        "--out", str(tmp_path / "eval")]) == 0
    assert "real test images (floor)" in (tmp_path / "eval" / "trilemma.md").read_text()
