"""Words and pictures: captioned shapes, the tokenizer, the text encoder, CLIP's loss and metrics."""

import json
import math

import numpy as np
import pytest
import torch

from minigen.data import load_dataset
from minigen.data.captioned import ATTRIBUTES, HELD_OUT, PHRASINGS, caption, is_held_out, make_captioned_shapes
from minigen.evaluation.metrics import clip_score, retrieval_recall, zero_shot_attributes
from minigen.models.clip import info_nce
from minigen.models.text import TextEncoder, preset
from minigen.errors import MinigenError
from minigen.tokenizer import CLS, PAD, UNK, Tokenizer


def test_info_nce_is_the_mean_of_both_cross_entropies_computed_by_hand():
    L = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.4, 0.9, 0.7]]
    row = lambda i: -math.log(math.exp(L[i][i]) / sum(math.exp(v) for v in L[i]))          # image i -> its caption
    col = lambda j: -math.log(math.exp(L[j][j]) / sum(math.exp(L[i][j]) for i in range(3)))  # caption j -> its image
    by_hand = 0.5 * (sum(map(row, range(3))) / 3 + sum(map(col, range(3))) / 3)
    logits = torch.tensor(L)
    assert info_nce(logits).item() == pytest.approx(by_hand, rel=1e-6)
    assert info_nce(logits.T).item() == pytest.approx(by_hand, rel=1e-6)                    # symmetric


def test_hard_negatives_join_each_images_row_only():
    """2 images, their 2 captions and 2 hard-negative captions: image i's cross-entropy runs over
    4 captions, caption j's over the 2 images."""
    L, hard = [[1.0, 0.2], [0.3, 0.5]], [[0.9, -1.0], [0.4, 2.0]]
    row = lambda i: -math.log(math.exp(L[i][i]) / (sum(math.exp(v) for v in L[i]) + sum(math.exp(v) for v in hard[i])))
    col = lambda j: -math.log(math.exp(L[j][j]) / sum(math.exp(L[i][j]) for i in range(2)))
    by_hand = 0.5 * ((row(0) + row(1)) / 2 + (col(0) + col(1)) / 2)
    assert info_nce(torch.tensor(L), torch.tensor(hard)).item() == pytest.approx(by_hand, rel=1e-6)


def test_a_twin_is_no_negative_in_either_direction():
    """Images 0 and 2 have the same facts: image 0's row runs over captions 0 and 1 only, caption
    0's column over images 0 and 1 only, and the same for 2; image 1 keeps all three."""
    L = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.4, 0.9, 0.7]]
    keep = [[0, 1], [0, 1, 2], [1, 2]]                                   # what each row (column) may choose from
    row = lambda i: -math.log(math.exp(L[i][i]) / sum(math.exp(L[i][j]) for j in keep[i]))
    col = lambda j: -math.log(math.exp(L[j][j]) / sum(math.exp(L[i][j]) for i in keep[j]))
    by_hand = 0.5 * (sum(map(row, range(3))) / 3 + sum(map(col, range(3))) / 3)
    facts = torch.tensor([[1, 4], [0, 4], [1, 4]])
    twins = (facts[:, None] == facts[None]).all(-1)
    assert info_nce(torch.tensor(L), twins=twins).item() == pytest.approx(by_hand, rel=1e-6)
    assert info_nce(torch.tensor(L), twins=torch.eye(3, dtype=torch.bool)).item() == pytest.approx(
        info_nce(torch.tensor(L)).item(), rel=1e-6)                      # nobody's twin but its own: plain InfoNCE


def test_a_hard_negative_names_another_value_of_one_attribute():
    import train_clip
    digits = load_dataset("glyphs", n=40)
    negatives = train_clip.hard_negatives(digits, torch.arange(40), torch.Generator().manual_seed(0))
    assert all(str(int(y)) not in text for y, text in zip(digits.labels, negatives))
    shapes = load_dataset("captioned-shapes", "test", n=40)
    negatives = train_clip.hard_negatives(shapes, torch.arange(40), torch.Generator().manual_seed(0))
    for facts, text in zip(shapes.facts.tolist(), negatives):
        words = set(text.replace(",", "").split())
        gone = [name for name, i in zip(ATTRIBUTES, facts) if not set(ATTRIBUTES[name][i].split()) <= words]
        assert len(gone) == 1, (facts, text)                               # exactly one attribute changed
    train = load_dataset("captioned-shapes", "train", n=400)
    negatives = train_clip.hard_negatives(train, torch.arange(400), torch.Generator().manual_seed(0))
    held = [p for s, c in HELD_OUT for p in (f"{c} {s}", f"{s} in {c}")]     # "green triangle", "triangle in green"
    assert not any(pair in text for pair in held for text in negatives)     # no held-out pair taught as a negative


def test_a_contrast_batch_groups_images_that_differ_only_in_shape():
    import train_clip
    train = load_dataset("captioned-shapes", "train", n=3000)
    anchors = torch.arange(40)
    index = train_clip.contrast_batch(train, anchors, 0, torch.Generator().manual_seed(0))
    groups = train.facts[index].reshape(40, 4, 5)                           # anchor, then its three partners
    assert torch.equal(index.reshape(40, 4)[:, 0], anchors)
    present = {tuple(f) for f in train.facts.tolist()}
    for g in groups:
        for j in range(1, 4):                        # partner j: the anchor's shape + j (mod 4), all else equal
            wanted = g[0].clone()
            wanted[0] = (g[0, 0] + j) % 4
            if tuple(wanted.tolist()) in present:    # else (a held-out pair, or not drawn) a random image stands in
                assert torch.equal(g[j], wanted)
    complete = sum(all((int(g[0, 0] + j) % 4, *g[0, 1:].tolist()) in present for j in range(1, 4))
                   for g in groups)
    assert complete >= 10                            # purple and orange anchors (2 of 6 colours) at least


def test_a_perfect_embedding_reads_every_attribute_and_retrieves_every_pair():
    """Captions of all 12 combinations of two attributes (3 x 4), each its own orthogonal
    direction; each image embedded exactly on its combination's caption."""
    facts = torch.tensor([(a, b) for a in range(3) for b in range(4)])                       # (12, 2)
    T = torch.eye(12)
    truth = torch.tensor([5, 0, 11, 7, 7, 2])                                                # six images' combinations
    I = T[truth]
    assert torch.equal(zero_shot_attributes(I, T, facts), facts[truth])
    assert retrieval_recall(I, T[truth], facts[truth], facts[truth], k=1) == (1.0, 1.0)


def test_clip_score_is_two_and_a_half_times_the_clipped_cosine():
    I = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    T = torch.tensor([[1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    # cosines 1, -1 (clipped to 0) and 1/√2
    assert clip_score(I, T) == pytest.approx(2.5 * (1 + 0 + 1 / math.sqrt(2)) / 3)


def test_the_tokenizer_round_trips_truncates_and_reports_unknown_words():
    tok = Tokenizer.learn(["a small red circle", "Blue square, large"], max_len=5)
    assert tok.vocab[:3] == ["[PAD]", "[UNK]", "[CLS]"] and len(tok) == 3 + 7
    ids, mask = tok.encode(["A Red circle!", "a crimson circle", "a small red circle on blue"])
    assert tok.decode(ids[0]) == "a red circle"                                               # lower-cased, punctuation gone
    assert ids[0, 0] == CLS and ids[0, 4] == PAD and mask[0].tolist() == [True, True, True, True, False]
    assert ids[1, 2] == UNK
    assert mask[2].all() and tok.decode(ids[2]) == "a small red circle"                       # cut to max_len
    assert tok.unknown("a crimson circle on a crimson blob") == ["crimson", "on", "blob"]
    assert Tokenizer(**tok.state()).encode(["a red circle"])[0].tolist() == tok.encode(["a red circle"])[0].tolist()


def test_padding_never_changes_the_text_encoding():
    """The same caption padded to 6 or to 12 tokens: identical per-token features and pooled vector."""
    torch.manual_seed(0)
    encoder = TextEncoder(preset("tiny", vocab_size=10, max_len=12))
    ids = torch.tensor([[CLS, 4, 5, 6]])
    short, long = (torch.cat([ids, torch.zeros(1, n - 4, dtype=torch.long)], 1) for n in (6, 12))
    (tok_s, pooled_s), (tok_l, pooled_l) = encoder(short, short != PAD), encoder(long, long != PAD)
    assert torch.allclose(pooled_s, pooled_l, atol=1e-6) and torch.allclose(tok_s[:, :4], tok_l[:, :4], atol=1e-6)


def test_captions_are_a_function_of_the_attributes_and_name_every_one():
    facts = np.array([0, 2, 1, 4, 2])            # circle, blue, large, centre, white
    for p in range(len(PHRASINGS)):
        text = caption(facts, p)
        assert text == caption(facts.copy(), p)
        for word in ("circle", "blue", "large", "centre", "white"):
            assert word in text
    assert caption(facts, 0) == "a large blue circle in the centre on white"
    assert caption(np.array([2, 0, 0, 0, 0]), 1) == "red triangle, small, top left, on black"


def test_held_out_combinations_never_occur_in_the_training_split():
    images, train = make_captioned_shapes(3000, seed=4, split="train")
    _, test = make_captioned_shapes(3000, seed=4, split="test")
    assert images.shape == (3000, 3, 32, 32) and not is_held_out(train).any()
    held = is_held_out(test)
    assert 0.1 < held.mean() < 0.25                                   # 4 of 24 (shape, colour) pairs
    shape, colour = list(ATTRIBUTES["shape"]), list(ATTRIBUTES["colour"])
    pairs = {(shape[s], colour[c]) for s, c in test[held][:, :2]}
    assert pairs == set(HELD_OUT)
    assert set(train[:, 0]) == set(range(4)) and set(train[:, 1]) == set(range(6))      # every part still seen
    # The judges' set holds every pair in its training split, drawn from streams of its own.
    judges = load_dataset("captioned-shapes-all", "train", n=300)
    assert is_held_out(judges.facts.numpy()).mean() > 0.1
    assert not torch.equal(judges.images, load_dataset("captioned-shapes", "train", n=300).images)


def test_captioned_shapes_load_with_the_shape_as_class_and_captions_for_every_set():
    data = load_dataset("captioned-shapes", "test", n=50)
    assert data.classes == ATTRIBUTES["shape"] and torch.equal(data.labels, data.attributes[:, 0])
    assert data.captions(torch.tensor([0, 1]), 0) == [caption(a, 0) for a in data.attributes[:2].numpy()]
    digits = load_dataset("glyphs", n=5)
    assert digits.captions(torch.tensor([0]), 0) == [f"the digit {int(digits.labels[0])}"]


def test_train_clip_resumes_bit_exactly_and_reports(tmp_path):
    import train_clip
    from minigen.training.checkpoint import load_checkpoint
    args = ["--preset", "tiny", "--steps", "4", "--batch-size", "16", "--max-images", "64", "--eval-every", "0"]
    assert train_clip.run(train_clip.main, args + ["--out", str(tmp_path / "whole")]) == 0
    assert train_clip.run(train_clip.main, args + ["--out", str(tmp_path / "split"), "--stop-after", "2"]) == 0
    assert train_clip.run(train_clip.main, args + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / run / "last.pt", kind="clip") for run in ("whole", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    report = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert set(report["zero_shot"]) == {"seen", "held_out"} and set(report["recall"]) == {"@1", "@5"}
    assert (tmp_path / "whole" / "similarity.png").is_file()
    assert train_clip.run(train_clip.main, args + ["--flip", "--out", str(tmp_path / "f")]) == 2
    assert train_clip.run(train_clip.main, args + ["--ignore-twins", "--contrast", "shape", "--out", str(tmp_path / "t")]) == 0


def test_words_of_any_script_and_symbols_are_kept_whole_and_refused_by_name():
    """NFKC first (fullwidth letters are the ASCII ones), then runs of letters of any script and
    each symbol: a word the model never saw is named whole, never cut into known pieces or lost."""
    from minigen.tokenizer import words
    assert words("a círcle 🔵, ＲＥＤ!") == ["a", "círcle", "🔵", "red"]
    assert words("T-shirt/top, a_b") == ["t", "shirt", "top", "a", "b"]       # punctuation still splits
    tok = Tokenizer.learn(["a red circle"])
    assert tok.unknown("a ｒｅｄ círcle 🔵") == ["círcle", "🔵"]
    with pytest.raises(MinigenError, match="unknown words in the prompt: 'círcle', '🔵'"):
        tok.encode_known(["a red círcle 🔵"])


def test_a_prompt_longer_than_the_model_reads_is_refused_naming_what_would_be_cut():
    tok = Tokenizer.learn(["a red circle"], max_len=4)                  # [CLS] and three words
    assert tok.encode_known(["a red circle"])[1].sum().item() == 4
    with pytest.raises(MinigenError, match="the prompt has 5 words; this model reads at most 3, so 2 would be "
                                           "dropped \\(red circle\\)"):
        tok.encode_known(["a red circle red circle"])


def test_an_unknown_word_in_a_large_vocabulary_names_the_closest_known_ones():
    """Past LISTED words the message does not list them all: it counts them and names the
    closest spellings (difflib's ratio), e.g. 'aple' -> 'apple', 'maple'."""
    from minigen.tokenizer import LISTED
    words_ = ["apple", "maple", "grape"] + [f"w{i}" for i in range(LISTED)]
    tok = Tokenizer.learn([" ".join(words_)])
    with pytest.raises(MinigenError) as e:
        tok.encode_known(["a red aple"])
    message = str(e.value)
    assert "'a', 'red', 'aple'" in message and f"this model knows {len(words_):,} words" in message
    small = Tokenizer.learn(["a red apple"])
    with pytest.raises(MinigenError, match="this model knows: a apple red"):
        small.encode_known(["a red aple"])
    with pytest.raises(MinigenError) as e:
        Tokenizer.learn([" ".join(["a", "red"] + words_)]).encode_known(["a red aple"])
    closest = str(e.value).split("the closest to 'aple': ")[1].split(", ")
    assert set(closest[:2]) == {"apple", "maple"} and not any(w.startswith("w") for w in closest)
