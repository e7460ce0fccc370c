"""Learning rate: linear warm-up, then cosine decay (Loshchilov & Hutter 2017, SGDR without restarts).

    factor(k) = (k + 1) / warmup                                        for k < warmup
    factor(k) = min_ratio + (1 − min_ratio)·½·(1 + cos(π·p)),  p = (k − warmup)/(total − warmup)

The factor multiplies the optimizer's base learning rate; use it with
`torch.optim.lr_scheduler.LambdaLR(opt, partial(warmup_cosine, warmup=..., total=...))`,
whose state (a step count) travels in checkpoints.
"""

import math


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
