"""`emoji`: every emoji, drawn by Debian's colour emoji font and named by the Unicode list.

Two Debian packages hold a real data set of pictures with names, no download needed:

    fonts-noto-color-emoji   NotoColorEmoji.ttf: each emoji as a colour bitmap, 109 px
    unicode-data             emoji/emoji-test.txt: every emoji's code points, CLDR name,
                             group and subgroup (Unicode 15.0: 3,655 fully-qualified ones)

A line of the list reads

    1F34E ; fully-qualified # 🍎 E0.6 red apple           (under "# group: Food & Drink")

Each fully-qualified emoji is drawn once by Pillow (the raqm layout joins a ZWJ sequence such as
"woman technologist: medium skin tone", or a flag's two regional letters, into one glyph), the
glyph's box centred on a white square of the font's cell size, then downsampled with a
Lanczos filter to 32x32 (or --image-size) and cached. Its class is its group (Smileys &
Emotion, People & Body, ...: 9 groups); its captions name it, in three phrasings:

    "red apple"    "a red apple, food and drink"    "an emoji of a red apple"

Held-out compositions. Person emoji come in five skin tones and often as man / woman / person.
A name is a *role* and a *tone*: "firefighter: dark skin tone" is the role "firefighter" in the
tone "dark". Two fixed sets of names never reach the training split:
    - one tone of a fifth of the roles that come in all five tones: the role whose CRC-32 is
      0 mod 5 loses tone TONES[(CRC-32 // 5) mod 5];
    - the "woman" form of another fifth of the roles that also come as "man ...": the role
      "woman X" whose CRC-32 is 1 mod 5, in every tone.
So "firefighter: dark skin tone" may ask for a picture never trained on while its every word
was. The training split holds the rest; the test split holds every emoji, the held-out ones
marked (Captioning.held_out), as captioned-shapes does.
"""

import hashlib
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from .captioning import Captioning

FONT_FILE = "NotoColorEmoji.ttf"
LIST_FILE = "emoji-test.txt"
SYSTEM = {FONT_FILE: Path("/usr/share/fonts/truetype/noto"), LIST_FILE: Path("/usr/share/unicode/emoji")}
PACKAGES = "fonts-noto-color-emoji unicode-data"
GLYPH_PX = 109                                  # the one size of the font's colour bitmaps
CELL = 136                                      # the square the glyph is centred on (its widest is 136 px)
TONES = ["light", "medium-light", "medium", "medium-dark", "dark"]


@dataclass(frozen=True)
class Emoji:
    text: str                                    # the code points, as a string
    name: str                                    # its CLDR name: "woman firefighter: dark skin tone"
    group: str                                   # "People & Body"
    subgroup: str                                # "person-role"

    def _parts(self) -> tuple[str, list[str], list[str]]:
        """"man: medium skin tone, beard" -> ("man", ["beard"], ["medium"]): the base name, the
        qualifiers that are not skin tones, and the skin tones."""
        base, _, rest = self.name.partition(": ")
        qualifiers = [q for q in rest.split(", ") if q]
        tone_of = {f"{t} skin tone": t for t in TONES}
        return base, [q for q in qualifiers if q not in tone_of], [tone_of[q] for q in qualifiers if q in tone_of]

    @property
    def role(self) -> str:
        """The name without its skin tones: "woman firefighter"; "kiss: person, person"; "man: beard"."""
        base, others, _ = self._parts()
        return base + (": " + ", ".join(others) if others else "")

    @property
    def tone(self) -> str:
        """Its one skin tone ("medium-dark"), "" for none, "mixed" for two different ones."""
        tones = set(self._parts()[2])
        return "" if not tones else tones.pop() if len(tones) == 1 else "mixed"


def parse(text: str) -> list[Emoji]:
    """The fully-qualified emoji of an emoji-test.txt, in its (CLDR) order."""
    found, group, subgroup = [], "", ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif not line.startswith("#") and "; fully-qualified" in line and "#" in line:
            points, comment = line.split(";", 1)[0], line.split("#", 1)[1].split()
            # comment: the emoji itself, its version ("E0.6"), then the name
            name = " ".join(comment[2:]) if len(comment) > 2 and comment[1].startswith("E") else " ".join(comment[1:])
            found.append(Emoji("".join(chr(int(p, 16)) for p in points.split()), name, group, subgroup))
    return found


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def held_out(emoji: list[Emoji]) -> np.ndarray:
    """(N,) bool: the fixed compositions never trained on (the module's docstring says which)."""
    tones_of: dict[str, set[str]] = {}
    for e in emoji:
        tones_of.setdefault(e.role, set()).add(e.tone)
    roles = set(tones_of)
    out = np.zeros(len(emoji), dtype=bool)
    for i, e in enumerate(emoji):
        crc = _crc(e.role)
        five_tones = set(TONES) <= tones_of[e.role]
        if five_tones and crc % 5 == 0 and e.tone == TONES[(crc // 5) % 5]:
            out[i] = True                        # one tone of this role
        if e.role.startswith("woman ") and "man " + e.role[len("woman "):] in roles and crc % 5 == 1:
            out[i] = True                        # the woman form of this role, in every tone
    return out


def phrase(e: Emoji, phrasing: int) -> str:
    """A caption of one emoji: its name, "a NAME, GROUP" or "an emoji of a NAME"."""
    name = e.name.lower()
    a = "an" if name[:1] in "aeiou" else "a"
    group = e.group.lower().replace("&", "and")
    return [name, f"{a} {name}, {group}", f"an emoji of {a} {name}"][phrasing % 3]


def find_files(root: Path) -> tuple[Path, Path]:
    """The font and the list: in ROOT (e.g. data/emoji/), else where Debian's packages put them;
    missing ones are named in one line with the apt-get command."""
    found = {}
    for name, system in SYSTEM.items():
        found[name] = next((p for p in (root / name, system / name) if p.is_file()), None)
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(f"emoji: no {' or '.join(missing)} in {root} or {', '.join(str(SYSTEM[m]) for m in missing)}; "
                        f"install Debian's packages: apt-get install {PACKAGES}")
    return found[FONT_FILE], found[LIST_FILE]


class Catalogue:
    """Every emoji of one list, drawn by one font: their names, groups, held-out marks and pictures."""

    def __init__(self, font: Path, listing: Path):
        self.font, self.listing = font, listing
        try:
            self.emoji = parse(listing.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"emoji: cannot read {listing}: {e}") from None
        if not self.emoji:
            raise DataError(f"emoji: {listing} lists no fully-qualified emoji; is it an emoji-test.txt?")
        self.groups = list(dict.fromkeys(e.group for e in self.emoji))        # the classes, in the list's order
        self.held_out = held_out(self.emoji)                                  # (N,) bool

    @cached_property
    def key(self) -> str:
        """A name for the cache: the two files' contents, hashed."""
        h = hashlib.sha256()
        for path in (self.font, self.listing):
            h.update(path.read_bytes())
        return h.hexdigest()[:16]

    def labels(self) -> np.ndarray:
        """(N, 2) int64: each emoji's group (its class) and its index in the list (its name)."""
        group = [self.groups.index(e.group) for e in self.emoji]
        return np.stack([np.array(group), np.arange(len(self.emoji))], axis=1).astype(np.int64)

    def split(self, split: str) -> np.ndarray:
        """The indices of a split: training never holds a held-out name; the test split holds all."""
        return np.flatnonzero(~self.held_out) if split == "train" else np.arange(len(self.emoji))

    def draw(self, size: int, progress=None) -> np.ndarray:
        """Every emoji as (N, 3, size, size) uint8: drawn at 109 px, the glyph's box centred on a
        white CELL x CELL square, downsampled by a Lanczos filter (antialiased: it averages
        every source pixel under the kernel, so thin lines survive the 4x reduction)."""
        try:
            font = ImageFont.truetype(str(self.font), GLYPH_PX, layout_engine=ImageFont.Layout.RAQM)
        except OSError:
            try:                                                     # Pillow built without raqm: sequences
                font = ImageFont.truetype(str(self.font), GLYPH_PX)  # may come out as several glyphs
            except OSError as e:
                raise DataError(f"emoji: cannot load the font {self.font}: {e}") from None
        out = np.empty((len(self.emoji), 3, size, size), dtype=np.uint8)
        for i, e in enumerate(progress(self.emoji) if progress else self.emoji):
            canvas = Image.new("RGBA", (3 * CELL, 2 * CELL), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((CELL // 2, CELL // 2), e.text, font=font, embedded_color=True,
                                        fill=(0, 0, 0, 255))
            box = canvas.getbbox() or (0, 0, 1, 1)
            cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
            side = max(CELL, box[2] - box[0], box[3] - box[1])      # a sequence drawn as two glyphs still fits
            glyph = canvas.crop((cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side))
            white = Image.new("RGBA", glyph.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(white, glyph).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            out[i] = np.asarray(picture).transpose(2, 0, 1)
        return out

    def captioning(self):
        """What the captions name (the group, then the emoji) and how they are phrased."""
        emoji, held = self.emoji, self.held_out
        every = torch.from_numpy(self.labels())
        return Captioning({"group": self.groups, "emoji": [e.name for e in emoji]},
                          lambda facts, phrasing=0: [phrase(emoji[int(f[-1])], phrasing) for f in facts],
                          lambda facts: held[np.asarray(facts)[:, -1]],
                          combinations=lambda: every)


def catalogue(root: Path) -> Catalogue:
    """The catalogue of the files found from `root` (find_files)."""
    return Catalogue(*find_files(root))
