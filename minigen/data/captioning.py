"""What a data set's captions name, and how they are made from what each image shows.

Every set has captions: `captioned-shapes` names five attributes per image (captioned.py),
`emoji` names each emoji (emoji.py), and the rest name their class ("a picture of a sneaker").
An image's *facts* are the indices its captions are made from: its attributes, or its label.
"""

import itertools
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Captioning:
    """What the words of a data set's captions name, and how they are made.
    facts: an image's attribute indices (A,), in the order of `attributes`; for a labelled set, (label,)."""
    attributes: dict[str, list[str]]                 # name -> its values' words; the class comes first
    describe: Callable                               # (facts (N, A), phrasing) -> N captions
    held_out: Callable | None = None                 # facts (N, A) -> (N,) bool: never in the training split
    combinations: Callable | None = None             # () -> facts (M, A) of every thing there is, where
                                                     # not every combination of values is one (emoji)

    def every_combination(self, phrasing: int = 0) -> tuple[list[str], torch.Tensor]:
        """A caption of every combination of attribute values, and those values (M, A): the
        candidates a zero-shot reading of an image picks from."""
        if self.combinations is not None:
            facts = self.combinations()
        else:
            sizes = [len(values) for values in self.attributes.values()]
            facts = torch.tensor(list(itertools.product(*[range(k) for k in sizes])))  # (M, A)
        return self.describe(facts, phrasing), facts


def class_captioning(classes: list[str], template: str = "a picture of a {}") -> Captioning:
    """Captions that name an image's class, in three phrasings: "a picture of a sneaker", "a sneaker",
    "sneaker" (lower case; `template` for the first, e.g. "the digit {}")."""
    phrasings = [template, "a {}", "{}"]
    return Captioning({"class": list(classes)},
                      lambda facts, phrasing=0: [phrasings[phrasing % 3].format(classes[int(f[0])].lower()) for f in facts])
