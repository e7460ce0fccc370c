"""Where a sample's randomness comes from: one generator for the whole batch, or one per image.

    generator = torch.Generator().manual_seed(seed)        # the batch draws from one stream
    generator = ImageSeeds(seed, n)                        # image i draws only from seed + i
    eps = normal((n, C, H, W), generator)                  # every draw of x_T and of a step's noise

With one generator, image i of a batch depends on the batch around it: its noise is the i-th
slice of draws shared by all. With ImageSeeds, every draw is made image by image, each from its
own generator seeded seed + i, so image i of a batch is the image `-n 1 --seed (seed + i)` makes
alone (as AUTOMATIC1111's web UI numbers its seeds). The two give different pictures for the
same seed; sample.py uses one generator unless told --image-seeds, the studio always ImageSeeds.
"""

import torch

from .errors import MinigenError

TORCH_SEEDS = 2**64                      # torch.Generator.manual_seed takes 0 .. 2^64 − 1


class ImageSeeds:
    """n generators, image i's seeded seed + i."""

    def __init__(self, seed: int, n: int, device="cpu"):
        if not (0 <= seed and seed + n <= TORCH_SEEDS):
            raise MinigenError(f"seed {seed}: with {n} images the seeds run to {seed + n - 1}, past 2^64 − 1")
        self.seed = seed
        self.generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.generators)


def normal(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """ε ~ N(0, I) of `shape` (images first), from `generator`: a torch.Generator (or None, torch's
    global one) draws the whole tensor; ImageSeeds draws each image's slice from its own."""
    if not isinstance(generator, ImageSeeds):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if shape[0] != len(generator):
        raise ValueError(f"{shape[0]} images drawn from {len(generator)} image seeds")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype)
                      for g in generator.generators])
