"""The judges of prompt accuracy: the ink reader reads real captioned shapes exactly and a blob
as a circle; the blur and sharpness the judges are tested under behave as their formulas say."""

import json
import math

import torch

from minigen.data import load_dataset
from minigen.data.captioned import SHAPES
from minigen.evaluation import judges
from minigen.evaluation.ink import AREA, read_ink


def test_the_ink_reader_reads_every_attribute_of_real_test_images():
    data = load_dataset("captioned-shapes", "test")
    index = torch.arange(160)
    x, _ = data.batch(index)
    assert torch.equal(read_ink(x), data.facts[index])          # all five, on every image: nothing learned


def test_a_blob_is_a_circle_whatever_was_asked():
    data = load_dataset("captioned-shapes", "test")
    facts = data.facts[:80]
    read = read_ink(judges.blobs(facts, 0.8, seed=1))
    assert (read[:, 0] == SHAPES.index("circle")).all()
    assert torch.equal(read[:, 1:], facts[:, 1:])               # colour, size, place, background kept


def test_each_shapes_area_over_r_squared_is_its_closed_form():
    # disc πr²; square of half side 0.8r; triangle of circumradius 1.2r; cross of arms 2r by 0.6r
    assert math.isclose(AREA["circle"], math.pi)
    assert math.isclose(AREA["square"], (2 * 0.8) ** 2)
    assert math.isclose(AREA["triangle"], 0.5 * 3 * (1.2 * math.sqrt(3)) * (0.6))        # ½·perimeter·apothem
    assert math.isclose(AREA["cross"], 2 * (2 * 0.6) - 0.6 * 0.6)                       # two arms, the middle once


def test_the_blur_keeps_a_flat_image_and_the_matched_blur_finds_a_known_sigma():
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(judges.gaussian_blur(flat, 1.5), flat, atol=1e-6)           # the kernel sums to one
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1
    blurred = judges.gaussian_blur(impulse, 2.0)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(31.0) - 15, torch.arange(31.0) - 15, indexing="ij")
    assert math.isclose((blurred * xs**2).sum().item(), 4.0, rel_tol=0.02)             # its variance is σ²
    real = load_dataset("captioned-shapes", "test").batch(torch.arange(64))[0]
    target = judges.sharpness(judges.gaussian_blur(real, 1.2))
    assert judges.sharpness(real) > target
    assert abs(judges.matched_blur(real, target) - 1.2) < 0.01


def test_the_judges_report_scores_each_judge_on_every_set(tmp_path):
    assert judges.main(["--blur", "0.8", "-n", "12", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "judges.json").read_text())
    assert set(report["ink"]) == {"real", "blurred", "blob"} and report["refused"] == []
    assert report["ink"]["real"]["all"] == 1.0 and report["ink"]["blob"]["fooled"] == 0.0
