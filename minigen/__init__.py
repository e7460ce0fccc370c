"""minigen: generative vision models written out in plain PyTorch, to be read.

Where things live:
    minigen/models/      the networks: unet.py (denoiser), dcgan.py (G and D), vit.py (classifier),
                         autoencoder.py (VAE), text.py and clip.py (words), text_to_image.py
    minigen/layers.py    what several models share: time embedding, attention (self or cross)
    minigen/diffusion/   the process (q, loss, every reverse step), the denoiser and its guidance wrappers,
                         the one sampling loop, editing (RePaint, SDEdit, inversion), schedules,
                         distillation, latent.py (the autoencoder's latent space for latent diffusion)
    minigen/tokenizer.py words -> token ids and a padding mask, learned from captions
    minigen/pipelines.py load(checkpoint) -> a pipeline ready to sample or judge
    minigen/sampling.py  the settings sample.py and edit.py share, resolved against a checkpoint
    minigen/training/    the run lifecycle (resume, Ctrl-C, DDP, saves), what the diffusion trainers
                         share, checkpoints, EMA, LR, logs
    minigen/data/        the data registry, built-in sets, readers for real data, download
    minigen/evaluation/  metrics, cost (parameters, FLOPs), the benchmarks, prompt accuracy
    minigen/images.py    grids, strips, GIFs;  interpolation.py  slerp
    minigen/device.py  progress.py  cli.py  errors.py   device and seeds, progress bars, flags, errors

The seams, in a few lines:
    pipe = pipelines.load("runs/ddpm/last.pt")                  # network (EMA), diffusion, shape, classes
    denoiser = pipe.denoiser(guidance=3.0)                      # (x_t, t, **cond) -> x̂_0, ε̂, guided
    x = SamplerConfig("ddim", steps=50).sample(denoiser, pipe.noise(8), cond=pipe.condition(labels))
and a training script:  run = Run(cfg, kind); run.attach(model, ...); with run: for step in run.steps(): ...
"""

__version__ = "0.1.0"
