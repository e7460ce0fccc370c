"""Training helpers: the run lifecycle every script shares, checkpoints, EMA, LR schedule, logs,
and DiffAugment. The step itself stays written out in each training script."""
