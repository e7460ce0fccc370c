"""The emoji data set: names, groups and skin tones read from an emoji-test.txt, the held-out
compositions, the drawing, the cache and the one-line error for missing packages.

A tiny fake stands in for the two Debian packages: a list in emoji-test.txt's format whose
"emoji" are capital letters, and Pillow's own built-in font saved as NotoColorEmoji.ttf. One
test reads the real packages where they are installed and skips with the reason where not."""

import zlib
from pathlib import Path

import pytest
import torch
from PIL import ImageFont

import train_ddpm
from minigen.data import emoji, load_dataset
from minigen.errors import DataError
from minigen.tokenizer import words

TONES = ["light", "medium-light", "medium", "medium-dark", "dark"]
# the five skin colours and the tone-less yellow, RGB in [0, 1] (close to those the judge measures on the font)
TONE_COLOURS = torch.tensor([[0.98, 0.87, 0.74], [0.88, 0.73, 0.58], [0.73, 0.55, 0.41], [0.65, 0.42, 0.26],
                             [0.44, 0.33, 0.29], [1.0, 0.79, 0.16]])


def line(points: str, name: str, status: str = "fully-qualified") -> str:
    glyph = "".join(chr(int(p, 16)) for p in points.split())
    return f"{points:<40} ; {status:<20} # {glyph} E1.0 {name}"


def fake_list(roles: list[str]) -> str:
    """Two groups: faces (no tones) and people (each role in no tone and the five, a man and a
    woman form of each); letters stand in for the emoji. Lines that must be skipped are there too."""
    rows = ["# emoji-test.txt (a fake)", "# group: Smileys & Emotion", "# subgroup: face-smiling",
            line("0041", "grinning face"), line("0042", "red apple"),
            line("0043", "smiling face", "unqualified"),
            "# group: Component", "# subgroup: skin-tone", line("1F3FB", "light skin tone", "component"),
            "# group: People & Body", "# subgroup: person-role"]
    letter = 0x44
    for role in roles:
        for form in (role, f"man {role}", f"woman {role}"):
            for tone in ["", *TONES]:
                rows.append(line(f"{letter:04X}", form + (f": {tone} skin tone" if tone else "")))
                letter = letter + 1 if letter < 0x5A else 0x44
    rows.append(line("0044", "kiss: person, person, medium-dark skin tone, light skin tone"))
    rows.append(line("0045", "man: medium skin tone, beard"))
    return "\n".join(rows) + "\n"


# Roles chosen by their CRC-32 (computed here, not by the module) so both held-out rules fire.
ROLES = {r: zlib.crc32(r.encode()) for r in ["astronaut", "baker", "cook", "diver", "farmer", "judge", "pilot",
                                             "singer", "student", "teacher", "mechanic", "scientist"]}


def write_fake_packages(root: Path) -> Path:
    """ROOT/emoji/ with the fake list and a font (--data-root ROOT reads them); ROOT."""
    (root / "emoji").mkdir(parents=True)
    (root / "emoji" / "emoji-test.txt").write_text(fake_list(list(ROLES)), encoding="utf-8")
    (root / "emoji" / "NotoColorEmoji.ttf").write_bytes(ImageFont.load_default(size=20).font_bytes)
    return root


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """data/emoji/ with the fake list and a font; the system folders point nowhere."""
    monkeypatch.setattr(emoji, "SYSTEM", {k: tmp_path / "not-installed" for k in emoji.SYSTEM})
    return write_fake_packages(tmp_path / "data")


def test_names_groups_and_tones_are_read_from_the_list():
    text = "\n".join(["# group: Food & Drink", "# subgroup: food-fruit", line("1F34E", "red apple"),
                      line("2764", "red heart", "unqualified"), "# group: People & Body", "# subgroup: person-role",
                      line("1F9D1 200D 1F692", "firefighter"),
                      line("1F469 1F3FF 200D 1F692", "woman firefighter: dark skin tone"),
                      line("1F9D4 1F3FD", "person: medium skin tone, beard"),
                      line("1F9D1 1F3FE 200D 2764 FE0F 200D 1F9D1 1F3FB", "couple with heart: person, person, "
                                                                       "medium-dark skin tone, light skin tone")])
    found = emoji.parse(text)
    assert [e.name for e in found] == ["red apple", "firefighter", "woman firefighter: dark skin tone",
                                       "person: medium skin tone, beard",
                                       "couple with heart: person, person, medium-dark skin tone, light skin tone"]
    assert found[0].text == "\U0001F34E" and (found[0].group, found[0].subgroup) == ("Food & Drink", "food-fruit")
    assert found[2].text == "\U0001F469\U0001F3FF\u200d\U0001F692" and found[2].group == "People & Body"
    assert [(e.role, e.tone) for e in found] == [("red apple", ""), ("firefighter", ""), ("woman firefighter", "dark"),
                                                 ("person: beard", "medium"),
                                                 ("couple with heart: person, person", "mixed")]
    assert emoji.phrase(found[0], 0) == "red apple"
    assert emoji.phrase(found[0], 1) == "a red apple, food and drink"
    assert emoji.phrase(found[0], 2) == "an emoji of a red apple"


def test_the_held_out_compositions_follow_the_documented_rule(fake_root):
    cat = emoji.catalogue(fake_root / "emoji")
    # the rule, derived here from the CRC-32s: a role with CRC 0 mod 5 loses one tone; the woman
    # form of a role whose "woman ROLE" CRC is 1 mod 5 is held out in every tone
    expected = set()
    for role, crc in ROLES.items():
        for form in (role, f"man {role}", f"woman {role}"):
            c = zlib.crc32(form.encode())
            if c % 5 == 0:
                expected.add(f"{form}: {TONES[(c // 5) % 5]} skin tone")
        if zlib.crc32(f"woman {role}".encode()) % 5 == 1:
            expected |= {f"woman {role}"} | {f"woman {role}: {t} skin tone" for t in TONES}
    assert expected, "the fake's roles must exercise the rule"
    held = {e.name for e, h in zip(cat.emoji, cat.held_out) if h}
    assert held == expected
    # a held-out name asks for a picture never trained on while each of its words was trained on
    trained = {w for e, h in zip(cat.emoji, cat.held_out) if not h for p in range(3) for w in words(emoji.phrase(e, p))}
    assert all(set(words(emoji.phrase(e, p))) <= trained for e in cat.emoji for p in range(3))


def test_the_splits_classes_and_captions(fake_root):
    train = load_dataset("emoji", root=fake_root, size=16)
    test = load_dataset("emoji", "test", root=fake_root, size=16)
    cat = emoji.catalogue(fake_root / "emoji")
    n = 2 + 3 * 6 * len(ROLES) + 2                     # the fake's fully-qualified lines
    assert len(test) == n and len(train) == n - cat.held_out.sum()
    assert train.classes == test.classes == ["Smileys & Emotion", "People & Body"]   # no Component: none qualified
    assert train.shape == (3, 16, 16) and train.images.dtype == torch.uint8
    held = test.captioning.held_out(test.facts.numpy())
    assert held.sum() == cat.held_out.sum() and not train.captioning.held_out(train.facts.numpy()).any()
    assert train.labels[:2].tolist() == [0, 0] and test.labels[-1].item() == 1
    assert test.captions(torch.tensor([1]), phrasing=2) == ["an emoji of a red apple"]
    captions, facts = test.captioning.every_combination(1)
    assert len(captions) == n and captions[0] == "a grinning face, smileys and emotion"
    assert set(test.every_caption()) == {emoji.phrase(e, p) for e in cat.emoji for p in range(3)}


def test_a_glyph_is_drawn_centred_on_white(fake_root):
    images = load_dataset("emoji", "test", root=fake_root, size=32).images.float()   # (N, 3, 32, 32)
    assert (images[:, :, 0, :] == 255).all() and (images[:, :, :, 0] == 255).all()   # the border is white
    ink = (images < 128).any(dim=1)                       # (N, 32, 32)
    assert ink.flatten(1).any(1).all()                    # every letter is drawn
    for axis in (1, 2):                                   # the ink's box is centred (not the text's baseline)
        lines = ink.any(dim=axis).float()                 # (N, 32) columns or rows holding ink
        first = lines.argmax(1).float()
        last = 31 - lines.flip(1).argmax(1).float()
        assert (((first + last) / 2 - 15.5).abs() <= 1).all()


def test_the_drawing_is_cached_and_a_new_list_is_a_new_entry(fake_root, monkeypatch):
    first = load_dataset("emoji", root=fake_root, size=16)
    monkeypatch.setattr(emoji.Catalogue, "draw", lambda *a, **k: pytest.fail("drawn again, not read from the cache"))
    assert torch.equal(load_dataset("emoji", root=fake_root, size=16).images, first.images)
    listing = fake_root / "emoji" / "emoji-test.txt"
    listing.write_text(listing.read_text(encoding="utf-8") + line("0046", "extra face") + "\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match="drawn again"):
        load_dataset("emoji", root=fake_root, size=16)


def test_missing_packages_are_named_with_the_command(fake_root, tmp_path, capsys):
    empty = tmp_path / "empty"
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji unicode-data"):
        load_dataset("emoji", root=empty)
    (empty / "emoji").mkdir(parents=True)
    (empty / "emoji" / "emoji-test.txt").write_text(fake_list([]), encoding="utf-8")
    with pytest.raises(DataError, match="no NotoColorEmoji.ttf in .*apt-get"):
        load_dataset("emoji", root=empty)
    assert train_ddpm.run(train_ddpm.main, ["--dataset", "emoji", "--data-root", str(tmp_path / "nowhere"),
                                            "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install fonts-noto-color-emoji unicode-data" in err
    with pytest.raises(DataError, match="8 to 128"):
        load_dataset("emoji", root=fake_root, size=200)


@pytest.mark.skipif(not all((folder / name).is_file() for name, folder in emoji.SYSTEM.items()),
                    reason="Debian's fonts-noto-color-emoji and unicode-data are not installed")
def test_the_real_list_and_font():
    """Unicode 15.0's emoji-test.txt lists 3,655 fully-qualified emoji (its own summary line says so)."""
    cat = emoji.catalogue(Path("no-such-root"))
    text = cat.listing.read_text(encoding="utf-8")
    assert len(cat.emoji) == int(text.split("# fully-qualified :")[1].split()[0])
    assert len(cat.groups) == 9 and "Component" not in cat.groups
    apple = next(e for e in cat.emoji if e.name == "red apple")
    assert apple.text == "\U0001F34E" and apple.group == "Food & Drink"
    one = emoji.Catalogue(cat.font, cat.listing)                          # draw the apple alone
    one.emoji = [apple]
    red = one.draw(32)[0].astype(int)                                      # (3, 32, 32)
    ink = (red < 200).any(0)
    assert ink[8:24, 8:24].mean() > 0.5 and (red[0][ink] > red[1][ink] + 40).mean() > 0.5   # mostly red ink
    assert 0 < cat.held_out.sum() < len(cat.emoji) // 10


def test_the_identity_judge_reads_tone_by_colour_and_finds_the_nearest_picture():
    """The skin-tone reader on flat pictures of each reference colour (and of white: no tone), a
    picture with too few skin pixels reads no tone; the nearest-picture reader finds each of a set
    of distinct pictures as its own nearest, and a picture nudged towards another finds that one."""
    from minigen.evaluation.identity import TONE_MIN, nearest, read_tone
    colours = TONE_COLOURS
    flat = lambda rgb: (torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 8, 8) * 2 - 1)
    pictures = torch.cat([flat(c.tolist()) for c in colours] + [flat([1.0, 1.0, 1.0])])
    assert read_tone(pictures, colours) == TONES + ["", ""]
    speck = flat([1.0, 1.0, 1.0]).clone()
    speck[0, :, 0, 0] = colours[4] * 2 - 1                               # one pixel of 64: under TONE_MIN
    assert 1 / 64 < TONE_MIN and read_tone(speck, colours) == [""]
    g = torch.Generator().manual_seed(0)
    real = torch.rand(10, 3, 32, 32, generator=g) * 2 - 1
    assert nearest(real, real, k=1)[:, 0].tolist() == list(range(10))
    nudged = 0.2 * real[:1] + 0.8 * real[7:8]
    assert nearest(nudged, real, k=2)[0].tolist() == [7, 0]


def test_the_identity_judge_reports_top5_of_one_of_a_kind_names_apart():
    """A person's tones are near twins, so top-5 of a person drawn in the right role is right
    whatever its tone; top-5 is therefore also given over names whose role comes in no other
    tone. Built here: two one-of-a-kind emoji far apart and a family of six tones close
    together; the first loner drawn as a family member (its five nearest are family), the
    rest drawn exactly: top-5 7 of 8, of the loners 1 of 2."""
    from minigen.evaluation.identity import read
    listed = [emoji.Emoji("a", "red apple", "Food & Drink", "food-fruit"),
              emoji.Emoji("b", "cat face", "Animals & Nature", "cat-face")]
    listed += [emoji.Emoji(chr(0x63 + i), "thumbs up" + (f": {t} skin tone" if t else ""), "People & Body", "hand")
               for i, t in enumerate(["", *TONES])]
    flat = lambda v: torch.full((1, 3, 8, 8), v)
    real = torch.cat([flat(0.9), flat(-0.9)] + [flat(0.01 * i) for i in range(6)])     # (8, 3, 8, 8)
    asked = torch.arange(8)
    drawn = torch.cat([real[2:3], real[1:]])                         # the apple drawn as a thumbs up
    colours = TONE_COLOURS
    r = read(drawn, asked, listed, real, colours)
    assert r["top5"] == 7 / 8 and r["plain"] == 2 and r["top5_plain"] == 1 / 2
    assert r["top1"] == 7 / 8 and r["toned"] == 5
