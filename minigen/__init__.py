"""minigen: generative vision models written out in plain PyTorch, to be read.

Where things live:
    minigen/data/       built-in data sets (glyphs, shapes), readers for real data, download
    minigen/checkpoint.py   one-file checkpoints, saved atomically, loaded without pickled code
    minigen/ema.py      exponential moving average of weights
    minigen/lr.py       learning-rate warm-up then cosine decay
    minigen/images.py   sample grids, strips and GIFs
    minigen/runtime.py  seeding and device choice
    minigen/runlog.py   JSON-lines metrics log
    minigen/schedules.py  β schedules (linear, cosine, sigmoid)
    minigen/diffusion.py  forward process, losses, DDPM and DDIM samplers
"""

__version__ = "0.1.0"
