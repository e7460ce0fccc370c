"""Training on part of a data set: ImageSet.subset keeps labels and the class list."""

import pytest
import torch

from minigen.data import DataConfig, ImageSet
from minigen.errors import DataError


def images() -> ImageSet:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    pixels = torch.arange(7, dtype=torch.uint8).reshape(7, 1, 1, 1)       # image i holds the value i
    return ImageSet("toy", pixels, labels, ["cat", "dog", "Bag"])


@pytest.mark.parametrize("only,drop,limit,kept", [
    (None, None, None, [0, 1, 2, 3, 4, 5, 6]),
    (["dog"], None, None, [1, 4]),
    (["CAT", "bag"], None, None, [0, 2, 3, 5, 6]),       # names match case-insensitively
    (None, ["Bag"], None, [0, 1, 3, 4, 6]),
    (None, ["Bag"], 3, [0, 1, 3]),                       # the first 3 after the filter
    (["cat", "dog"], ["dog"], None, [0, 3, 6]),
])
def test_subset_picks_images_and_keeps_the_classes(only, drop, limit, kept):
    part = images().subset(only, drop, limit)
    assert part.images.flatten().tolist() == kept                 # which images, in order
    assert part.labels.tolist() == [[0, 1, 2, 0, 1, 2, 0][i] for i in kept]
    assert part.classes == ["cat", "dog", "Bag"]


def test_the_config_reads_comma_separated_names_and_limits_only_training():
    cfg = DataConfig(only_classes="cat, Bag", max_images=2)
    assert cfg.select(images()).images.flatten().tolist() == [0, 2]
    assert cfg.select(images(), limit=False).images.flatten().tolist() == [0, 2, 3, 5, 6]


@pytest.mark.parametrize("kw,message", [
    ({"only": ["horse"]}, "toy has no class 'horse'; its classes: cat, dog, Bag"),
    ({"only": ["dog"], "drop": ["dog"]}, "no images left"),
])
def test_an_impossible_selection_is_one_clear_error(kw, message):
    with pytest.raises(DataError, match=message):
        images().subset(**kw)
