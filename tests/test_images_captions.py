"""Captions of the images domain: the attributes measured from images (on synthetic strokes of
known width, shear, size and position), their bins and words, the phrasings, held-out splits,
two-digit relations and the vocabulary."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowsci_domains.images.attributes import position, size, slant, thickness
from flowsci_domains.images.captions import (
    HELDOUT_RELATIONS,
    HELDOUT_TEMPLATES,
    MAX_LENGTH,
    PAD,
    TEMPLATES,
    TRAIN_RELATIONS,
    TRAIN_TEMPLATES,
    UNKNOWN,
    WORDS,
    Vocabulary,
    all_captions,
    attribute_agreement,
    attribute_thresholds,
    caption,
    compose_canvas,
    describe,
    heldout_combinations,
    is_heldout,
    parse_caption,
    parse_relation,
    relation_caption,
    tokenize,
)


def draw(inside, size: int = 28, supersample: int = 8) -> torch.Tensor:
    """An anti-aliased image (size, size): the fraction of each pixel where inside(x, y) holds,
    x to the right and y down from the image centre, in pixels."""
    c = (torch.arange(size * supersample) + 0.5) / supersample - size / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return F.avg_pool2d(inside(x, y).float()[None, None], supersample)[0, 0]


def bar(width: float, length: float, angle: float = 90.0, shear: float = 0.0) -> torch.Tensor:
    """A bar through the centre at ``angle`` degrees from the x axis (counter-clockwise, as seen),
    or a vertical bar sheared so that its top moves right by ``shear`` × height."""
    a = math.radians(angle)

    def inside(x, y):
        x = x + shear * y  # y is down: the top (y < 0) moves right for shear > 0
        along, across = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
        return (along.abs() <= length / 2) & (across.abs() <= width / 2)

    return draw(inside)


def grid() -> tuple[torch.Tensor, list[float], list[float]]:
    """Nine bars: widths 1, 2, 3 × shears -0.4, 0, 0.4 (N, 28, 28), with their widths and shears."""
    widths, shears = [1.0, 2.0, 3.0] * 3, [-0.4] * 3 + [0.0] * 3 + [0.4] * 3
    return torch.stack([bar(w, 16, shear=s) for w, s in zip(widths, shears)]), widths, shears


# --- attributes ------------------------------------------------------------------------------

def test_thickness_reads_the_width_of_bars_at_any_angle_and_length():
    widths, angles, lengths = (1, 2, 3, 4), (0, 30, 45, 60, 90, 135), (12, 18, 24)
    images = torch.stack([bar(w, n, a) for w in widths for a in angles for n in lengths])
    est = thickness(images).reshape(len(widths), len(angles), len(lengths))
    truth = torch.tensor(widths, dtype=torch.float)[:, None, None]
    assert ((est - truth).abs() / truth).max() < 0.3
    assert (est.diff(dim=0) > 0).all()  # monotone in the width at every angle and length
    by_length = est.mean(1)  # (width, length): averaged over the angles
    assert (by_length.amax(1) / by_length.amin(1)).max() < 1.15 # nearly independent of the length


def test_thickness_at_14px_of_loops_and_of_empty_images():
    ring = draw(lambda x, y: ((x.square() + y.square()).sqrt() - 8).abs() <= 1)  # width 2
    small = F.avg_pool2d(torch.stack([bar(2, 20), bar(4, 20, 45)])[:, None], 2)  # widths 1, 2 at 14×14
    assert thickness(ring[None]).item() == pytest.approx(2, rel=0.15)
    assert thickness(small).tolist() == pytest.approx([1, 2], rel=0.2)
    assert thickness(torch.zeros(1, 14, 14)).item() == 0


def test_slant_of_sheared_bars():
    shears = [-0.6, -0.3, 0.0, 0.3, 0.6]
    images = torch.stack([bar(3, 16, shear=s) for s in shears])
    assert slant(images).tolist() == pytest.approx(shears, abs=0.03)
    assert torch.equal(slant(images[:, None]), slant(images))
    assert slant(torch.zeros(1, 8, 8)).item() == 0


def test_size_is_the_bounding_box_fraction():
    images = torch.zeros(3, 28, 28)
    images[0, 2:12, 5:9] = 1.0                      # 10 × 4
    images[1, 0:28, 3:17] = 0.8                     # 28 × 14
    images[1, 0, 20] = 0.2                          # fainter than ink: outside the box
    images[2, 4, 4] = images[2, 20, 10] = 1.0       # two dots spanning 17 × 7
    assert size(images).tolist() == pytest.approx([40 / 784, 392 / 784, 119 / 784])
    assert size(torch.zeros(1, 14, 14)).item() == 0


def test_position_is_the_centroid_in_unit_coordinates():
    images = torch.zeros(3, 14, 10)
    images[0, 3, 7] = 1.0
    images[1, 2:6, 0:4] = 0.5                       # centre (2, 4) pixels from the top-left
    expected = torch.tensor([[7.5 / 10, 3.5 / 14], [0.2, 4 / 14], [0.5, 0.5]])
    assert torch.allclose(position(images), expected)


def test_attributes_refuse_bad_batches():
    with pytest.raises(ValueError, match="N, 1, H, W"):
        thickness(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        slant(torch.full((2, 8, 8), -1.0))


# --- bins and words --------------------------------------------------------------------------

def test_thresholds_and_describe_split_a_grid_of_bars():
    images, widths, shears = grid()
    thresholds = attribute_thresholds(images)
    assert set(thresholds) == {"thickness", "slant", "size"}
    assert 1 < thresholds["thickness"][0] < 2 < thresholds["thickness"][1] < 3
    assert -0.4 < thresholds["slant"][0] < 0 < thresholds["slant"][1] < 0.4
    described = describe(images[:, None], list(range(9)), thresholds)
    assert [d["digit"] for d in described] == list(range(9))
    assert [d["thickness"] for d in described] == [{1: "thin", 2: None, 3: "thick"}[w] for w in widths]
    assert [d["slant"] for d in described] == [{-0.4: "left", 0: None, 0.4: "right"}[s] for s in shears]
    with pytest.raises(ValueError, match="9 images but 2 labels"):
        describe(images, [0, 1], thresholds)
    with pytest.raises(ValueError, match="at least 3"):
        attribute_thresholds(images[:2])


def test_agreement_is_high_on_requested_images_and_low_on_opposite_ones():
    thresholds = attribute_thresholds(grid()[0])
    thick_right = torch.stack([bar(3, 16, shear=0.5), bar(3.5, 14, shear=0.3)])
    thin_left = torch.stack([bar(1, 16, shear=-0.5), bar(1, 14, shear=-0.3)])
    request = [{"digit": 7, "thickness": "thick", "slant": "right", "size": None}] * 2
    assert attribute_agreement(request, thick_right, thresholds) == {"thickness": 1, "slant": 1, "all": 1}
    assert attribute_agreement(request, thin_left, thresholds) == {"thickness": 0, "slant": 0, "all": 0}
    mixed = [{"digit": 1, "slant": "right"}, {"digit": 1, "thickness": "thin"}]
    assert attribute_agreement(mixed, thin_left, thresholds) == {"thickness": 1, "slant": 0, "all": 0.5}
    with pytest.raises(ValueError, match="no request names"):
        attribute_agreement([{"digit": 1}] * 2, thin_left, thresholds)


# --- phrasings -------------------------------------------------------------------------------

def every_description() -> list[dict]:
    options = [(None, *WORDS[name]) for name in ("thickness", "slant", "size")]
    return [{"digit": d, "thickness": t, "slant": s, "size": z}
            for d in range(10) for t in options[0] for s in options[1] for z in options[2]]


def test_captions_are_deterministic_and_parse_back():
    seven = {"digit": 7, "thickness": "thick", "slant": "right", "size": None}
    assert [caption(seven, k) for k in TRAIN_TEMPLATES] == [
        "a thick seven leaning right", "a seven, thick, leaning right", "a thick 7 that leans right",
        "the digit 7, thick, leaning right"]
    four = {"digit": 4, "thickness": "thin", "slant": None, "size": "large"}
    assert caption(four, 0) == "a large thin four"
    assert caption({"digit": 2, "size": "small"}, 0) == "a small two"
    for attributes in every_description():
        for k in range(len(TEMPLATES)):
            assert caption(attributes, k) == caption(dict(attributes), k)
            assert parse_caption(caption(attributes, k)) == attributes
    with pytest.raises(ValueError, match="template"):
        caption(seven, len(TEMPLATES))
    with pytest.raises(ValueError, match="slant must be one of"):
        caption({**seven, "slant": "up"}, 0)


def test_heldout_phrasings_differ_from_training_ones_in_training_words():
    def tokens(templates):
        return {tuple(tokenize(caption(a, k))) for a in every_description() for k in templates}

    train, heldout = tokens(TRAIN_TEMPLATES), tokens(HELDOUT_TEMPLATES)
    assert not train & heldout
    assert {w for t in heldout for w in t} <= {w for t in train for w in t}
    assert set(TRAIN_TEMPLATES) | set(HELDOUT_TEMPLATES) == set(range(len(TEMPLATES)))


def test_heldout_combinations_are_seeded_one_per_digit():
    combos = heldout_combinations(0)
    assert combos == heldout_combinations(0)
    assert sorted(d for d, _, _ in combos) == list(range(10))
    assert any(heldout_combinations(seed) != combos for seed in range(1, 5))
    digit, thick, lean = sorted(combos)[0]
    assert is_heldout({"digit": digit, "thickness": thick, "slant": lean, "size": "small"}, combos)
    assert not is_heldout({"digit": digit, "thickness": thick, "slant": None, "size": None}, combos)


# --- two digits ------------------------------------------------------------------------------

def test_canvas_puts_the_images_side_by_side():
    left, right = torch.rand(2, 1, 14, 14), torch.rand(2, 1, 14, 14)
    canvas = compose_canvas(left, right)
    assert canvas.shape == (2, 1, 14, 28)
    assert torch.equal(canvas[..., :14], left) and torch.equal(canvas[..., 14:], right)
    with pytest.raises(ValueError, match="one shape"):
        compose_canvas(left, right[:, :, :, :7])


def test_relation_captions_of_both_forms_name_the_same_layout():
    assert relation_caption(3, 7, 0) == "a 3 left of a 7"
    assert relation_caption(3, 7, 1) == "a 7 right of a 3"
    assert relation_caption(3, 7, HELDOUT_RELATIONS[0]) == "a 3 to the left of a 7"
    for form in TRAIN_RELATIONS + HELDOUT_RELATIONS:
        assert parse_relation(relation_caption(3, 7, form)) == (3, 7)
    train = {relation_caption(3, 7, k) for k in TRAIN_RELATIONS}
    assert not train & {relation_caption(3, 7, k) for k in HELDOUT_RELATIONS}
    with pytest.raises(ValueError, match="digits must be 0..9"):
        relation_caption(3, 12, 0)


# --- tokens ----------------------------------------------------------------------------------

def test_vocabulary_encodes_every_caption_and_round_trips():
    vocab = Vocabulary()
    assert 30 <= len(vocab) <= 45
    captions = all_captions()
    tokens = vocab.encode(captions)
    assert tokens.shape == (len(captions), MAX_LENGTH) and tokens.dtype == torch.long
    assert not (tokens == UNKNOWN).any()
    assert vocab.decode(tokens) == [" ".join(tokenize(c)) for c in captions]
    short = vocab.encode(["A Seven, thick!", "a purple seven"], length=5)
    assert short[0, 3:].tolist() == [PAD, PAD] and (short[0, :3] > UNKNOWN).all()
    assert short[1, 1].item() == UNKNOWN and vocab.decode(short)[1] == "a <unk> seven"
    with pytest.raises(ValueError, match="more than length=3"):
        vocab.encode(["a thick seven leaning right"], length=3)
