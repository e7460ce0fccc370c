"""Image seeds: image i of a batch drawn from seed + i is the image drawn alone at that seed."""

import pytest
import torch

from minigen.errors import MinigenError
from minigen.seeds import ImageSeeds, normal


def test_each_image_draws_from_its_own_seed_step_after_step():
    seeds = ImageSeeds(40, 3)
    first, second = normal((3, 2, 4, 4), seeds), normal((3, 2, 4, 4), seeds)       # x_T, then a step's noise
    for i in range(3):
        alone = torch.Generator().manual_seed(40 + i)                               # a second derivation
        assert torch.equal(first[i], torch.randn((1, 2, 4, 4), generator=alone)[0])
        assert torch.equal(second[i], torch.randn((1, 2, 4, 4), generator=alone)[0])
    one = torch.Generator().manual_seed(40)                                         # one stream: another batch
    assert torch.equal(normal((3, 2, 4, 4), one), torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(40)))


def test_a_batch_of_another_size_or_a_seed_past_torchs_is_refused():
    with pytest.raises(ValueError, match="5 images drawn from 3 image seeds"):
        normal((5, 1), ImageSeeds(0, 3))
    with pytest.raises(MinigenError, match="past 2\\^64"):
        ImageSeeds(2**64 - 2, 4)
