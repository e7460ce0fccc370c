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


def test_replay_adds_the_first_images_of_the_other_classes_to_training_only():
    """Image i holds the value i; labels 0 1 2 0 1 2 0 (cat dog Bag). Fine-tuning on Bag (images
    2, 5) with 3 replayed: the first 3 images that are not bags, 0, 1, 3, after the bags."""
    cfg = DataConfig(only_classes="Bag", replay=3)
    part = cfg.select(images())
    assert part.images.flatten().tolist() == [2, 5, 0, 1, 3]
    assert part.labels.tolist() == [2, 2, 0, 1, 0]
    assert cfg.select(images(), limit=False).images.flatten().tolist() == [2, 5]     # a test split: bags only
    both = DataConfig(only_classes="Bag", max_images=1, replay=2, drop_classes="dog")
    assert both.select(images()).images.flatten().tolist() == [2, 0, 3]              # no dog replayed
    with pytest.raises(DataError, match="--replay N rehearses"):
        DataConfig(replay=2).select(images())


@pytest.mark.parametrize("kw,message", [
    ({"only": ["horse"]}, "toy has no class 'horse'; its classes: cat, dog, Bag"),
    ({"only": ["dog"], "drop": ["dog"]}, "no images left"),
])
def test_an_impossible_selection_is_one_clear_error(kw, message):
    with pytest.raises(DataError, match=message):
        images().subset(**kw)
