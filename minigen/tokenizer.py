"""A word-level tokenizer learned from captions: text -> token ids and a padding mask.

    tok = Tokenizer.learn(captions)                     # the vocabulary: every word the captions use
    ids, mask = tok.encode(["a small red triangle"])   # (1, L) ids, (1, L) True for real tokens
    tok.unknown("a crimson triangle")                   # ["crimson"]: reported, never guessed

Words, not byte-pair merges: minigen's captions come from a closed vocabulary of a few dozen
words, each attribute word (red, triangle, large) one concept; a word-level vocabulary gives
each concept exactly one token. Byte-pair encoding (Sennrich et al. 2016) pays off for open
text, where new and misspelt words must still be encoded; here a word outside the vocabulary
is one the model has never seen in any form, so it is reported (`unknown`) rather than split
into pieces that would mean nothing to it.

Text is put in Unicode's compatibility form (NFKC: fullwidth ｒｅｄ is red), lower-cased and
split into runs of letters and digits of any script ("T-shirt/top" -> t, shirt, top; "círcle"
stays one word); any other symbol (an emoji) is a word of its own; punctuation is dropped. So a
word outside the vocabulary is always named whole, never quietly cut or lost. Each sequence starts with [CLS] (whose output is the pooled text
vector, as the ViT's class token), is truncated to `max_len` tokens and padded with [PAD].
"""

import difflib
import re
import unicodedata
from dataclasses import asdict, dataclass, field

import torch

from .errors import MinigenError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]"]
LISTED = 100                         # a vocabulary up to this size is listed whole in an unknown-word message
PAD, UNK, CLS = 0, 1, 2


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits, and each other symbol but punctuation, in order."""
    found = re.findall(r"[^\W_]+|[^\w\s]", unicodedata.normalize("NFKC", text).lower())
    return [w for w in found if not unicodedata.category(w[0]).startswith("P")]


@dataclass
class Tokenizer:
    vocab: list[str] = field(default_factory=lambda: list(SPECIALS))   # id -> word, specials first
    max_len: int = 24                                                   # tokens per sequence, [CLS] included

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def learn(cls, texts, max_len: int = 24) -> "Tokenizer":
        """Every word that occurs in `texts`, in sorted order after the special tokens."""
        seen = sorted({w for text in texts for w in words(text)})
        return cls(SPECIALS + seen, max_len)

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown(self, text: str) -> list[str]:
        """The words of `text` that are not in the vocabulary, in order, each once."""
        return list(dict.fromkeys(w for w in words(text) if w not in self.index))

    def encode_known(self, texts: list[str], what: str = "the prompt") -> tuple[torch.Tensor, torch.Tensor]:
        """`encode`, refusing in one line (MinigenError, naming them and `what` held them) the words
        this vocabulary never saw: a model knows nothing of them, so a prompt with one is not guessed at."""
        unknown = list(dict.fromkeys(w for text in texts for w in self.unknown(text)))
        if unknown:
            known = self.vocab[len(SPECIALS):]
            if len(known) <= LISTED:
                hint = f"this model knows: {' '.join(known)}"
            else:                                 # too many to list (emoji's 1,722): the nearest spellings
                close = difflib.get_close_matches(unknown[0], known, n=5, cutoff=0.5)
                hint = (f"this model knows {len(known):,} words" +
                        (f"; the closest to {unknown[0]!r}: {', '.join(close)}" if close else ""))
            raise MinigenError(f"unknown word{'s' * (len(unknown) > 1)} in {what}: "
                               f"{', '.join(map(repr, unknown))}; {hint}")
        for text in texts:                                   # a cut prompt means something else: refuse it
            cut = words(text)[self.max_len - 1:]
            if cut:
                raise MinigenError(f"{what} has {len(words(text))} words; this model reads at most "
                                   f"{self.max_len - 1}, so {len(cut)} would be dropped ({' '.join(cut)}): shorten it")
        return self.encode(texts)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, max_len) long and mask (B, max_len) bool, True for [CLS] and the words kept
        (unknown words become [UNK]; words past max_len − 1 are cut)."""
        ids = torch.full((len(texts), self.max_len), PAD, dtype=torch.long)
        for b, text in enumerate(texts):
            row = [CLS] + [self.index.get(w, UNK) for w in words(text)][: self.max_len - 1]
            ids[b, : len(row)] = torch.tensor(row)
        return ids, ids != PAD

    def decode(self, ids: torch.Tensor) -> str:
        """One sequence of ids back to its words (specials left out)."""
        return " ".join(self.vocab[i] for i in ids.tolist() if i >= len(SPECIALS))

    def state(self) -> dict:
        return asdict(self)
