"""Templated captions of digit images that say more than the label: attribute words, phrasings
(training and held-out), held-out attribute combinations, two-digit relations, and tokens.

Each attribute of :mod:`attributes` (thickness, slant, size) falls in one of three bins cut at
the tertiles of the training images (:func:`attribute_thresholds`). A caption names an
attribute only in an outer bin ("thin" / "thick", "leaning left" / "leaning right", "small" /
"large"); the middle bin goes unsaid. Held-out phrasings use only words of the training ones, in
new orders, so an evaluation with them tests phrasing, not unseen tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from flowsci_domains.images.attributes import size, slant, thickness

ATTRIBUTES = ("thickness", "slant", "size")
MEASURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "thickness": thickness, "slant": slant, "size": size}
# the words of each attribute's low and high outer bins
WORDS = {"thickness": ("thin", "thick"), "slant": ("left", "right"), "size": ("small", "large")}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUMERALS = tuple(str(d) for d in range(10))
MAX_LENGTH = 12  # tokens; the longest caption the templates write has 8
PAD, UNKNOWN = 0, 1


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each attribute of (N, H, W) or (N, 1, H, W) images in [0, 1]: name -> (N,)."""
    return {name: fn(images) for name, fn in MEASURES.items()}


def attribute_thresholds(images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Tertiles (low, high) of each attribute over the (training) images (N, [1,] H, W), N >= 3."""
    if len(images) < 3:
        raise ValueError(f"tertiles need at least 3 images, got {len(images)}")
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.double)
    return {name: tuple(torch.quantile(v.double(), q).tolist()) for name, v in measure(images).items()}


def describe(images: torch.Tensor, labels: Sequence[int] | torch.Tensor,
             thresholds: dict[str, tuple[float, float]]) -> list[dict]:
    """Attribute words of each image (N, [1,] H, W) with its label (N,): {"digit": int,
    "thickness": "thin" | "thick" | None, "slant": "left" | "right" | None, "size": "small" |
    "large" | None}, None in the middle bin (between the thresholds, inclusive)."""
    labels = torch.as_tensor(labels).tolist()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    words = {}
    for name, values in measure(images).items():
        low, high = thresholds[name]
        below, above = WORDS[name]
        words[name] = [below if v < low else above if v > high else None for v in values.tolist()]
    return [{"digit": int(d), **{name: words[name][i] for name in ATTRIBUTES}} for i, d in enumerate(labels)]


# --- phrasings ----------------------------------------------------------------------------
# Each template writes (digit word, numeral, adjectives [size, thickness] that are set, slant
# word or None) as a caption; examples with every attribute set, then with none.

def _lean(slant_word: str | None, verb: str = "leaning") -> list[str]:
    return [f"{verb} {slant_word}"] if slant_word else []


def _and(adjectives: list[str]) -> list[str]:
    return [" and ".join(adjectives)] if adjectives else []


TEMPLATES: tuple[Callable[[str, str, list[str], str | None], str], ...] = (
    # "a large thin seven leaning right", "a seven"
    lambda word, num, adj, lean: " ".join(["a", *adj, word, *_lean(lean)]),
    # "a seven, large, thin, leaning right", "a seven"
    lambda word, num, adj, lean: ", ".join([f"a {word}", *adj, *_lean(lean)]),
    # "a large thin 7 that leans right", "a 7"
    lambda word, num, adj, lean: " ".join(["a", *adj, num, *_lean(lean, "that leans")]),
    # "the digit 7, large and thin, leaning right", "the digit 7"
    lambda word, num, adj, lean: ", ".join([f"the digit {num}", *_and(adj), *_lean(lean)]),
    # held out: "the large thin digit seven that leans right", "the digit seven"
    lambda word, num, adj, lean: " ".join(["the", *adj, "digit", word, *_lean(lean, "that leans")]),
    # held out: "seven, leaning right, large and thin", "seven"
    lambda word, num, adj, lean: ", ".join([word, *_lean(lean), *_and(adj)]),
)
TRAIN_TEMPLATES = (0, 1, 2, 3)
HELDOUT_TEMPLATES = (4, 5)


def caption(attributes: dict, template: int) -> str:
    """The caption of ``attributes`` (as :func:`describe` gives them; a missing key counts as
    None) in phrasing ``template`` (an index of TEMPLATES)."""
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be in 0..{len(TEMPLATES) - 1}, got {template}")
    digit = attributes["digit"]
    if digit not in range(10):
        raise ValueError(f"digit must be 0..9, got {digit!r}")
    for name in ATTRIBUTES:
        if attributes.get(name) not in (None, *WORDS[name]):
            raise ValueError(f"{name} must be one of {WORDS[name]} or None, got {attributes[name]!r}")
    adjectives = [attributes[name] for name in ("size", "thickness") if attributes.get(name)]
    return TEMPLATES[template](DIGIT_WORDS[digit], NUMERALS[digit], adjectives, attributes.get("slant"))


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numerals; spaces and punctuation separate them and are dropped."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _digits(words: list[str]) -> list[int]:
    return [DIGIT_WORDS.index(w) if w in DIGIT_WORDS else NUMERALS.index(w)
            for w in words if w in DIGIT_WORDS or w in NUMERALS]


def parse_caption(text: str) -> dict:
    """The attributes a caption of :func:`caption` names (any template): the inverse of caption."""
    words = tokenize(text)
    digits = _digits(words)
    if len(digits) != 1:
        raise ValueError(f"an attribute caption names one digit, {text!r} names {len(digits)}")
    found = {name: [w for w in words if w in WORDS[name]] for name in ATTRIBUTES}
    return {"digit": digits[0], **{name: w[0] if w else None for name, w in found.items()}}


# --- held-out combinations and scoring ---------------------------------------------------------

def heldout_combinations(seed: int) -> set[tuple[int, str, str]]:
    """For each digit one outer (thickness, slant) combination kept out of training, drawn by
    ``seed``: {(digit, "thin" | "thick", "left" | "right")}."""
    combos = [(t, s) for t in WORDS["thickness"] for s in WORDS["slant"]]
    picks = np.random.default_rng(seed).integers(len(combos), size=10)
    return {(digit, *combos[k]) for digit, k in enumerate(picks)}


def is_heldout(attributes: dict, combinations: set[tuple[int, str, str]]) -> bool:
    """Whether an image's attributes (from :func:`describe`) are a held-out combination. Judge
    the image's full description, not a caption that leaves words out: such an image must
    leave the training set whatever its caption says."""
    return (attributes["digit"], attributes.get("thickness"), attributes.get("slant")) in combinations


def attribute_agreement(requested: list[dict], images: torch.Tensor,
                        thresholds: dict[str, tuple[float, float]]) -> dict[str, float]:
    """How often the images (N, [1,] H, W) show the attributes their requests (N dicts like
    :func:`describe`'s) name. An outer-bin word is judged by the side of the median (the midpoint
    of the two thresholds): "thick" is right when the thickness lies above it, "thin" below.
    Returns, for each attribute some request names, the fraction right among the images asked
    for it, and "all": the fraction of images asked for any attribute that show every one."""
    if len(requested) != len(images):
        raise ValueError(f"{len(images)} images but {len(requested)} requests")
    values = {name: v.tolist() for name, v in measure(images).items()}
    hits: dict[str, list[bool]] = {name: [] for name in ATTRIBUTES}
    every = []
    for i, request in enumerate(requested):
        right = []
        for name in ATTRIBUTES:
            word = request.get(name)
            if word is None:
                continue
            if word not in WORDS[name]:
                raise ValueError(f"request {i}: {name} must be one of {WORDS[name]} or None, got {word!r}")
            median = sum(thresholds[name]) / 2
            right.append(values[name][i] > median if word == WORDS[name][1] else values[name][i] < median)
            hits[name].append(right[-1])
        if right:
            every.append(all(right))
    if not every:
        raise ValueError("no request names an attribute")
    return {**{name: float(np.mean(h)) for name, h in hits.items() if h}, "all": float(np.mean(every))}


# --- two digits side by side ---------------------------------------------------------------

RELATION_TEMPLATES = (
    "a {l} left of a {r}", "a {r} right of a {l}",
    "a {lw} left of a {rw}", "a {rw} right of a {lw}",
    "a {lw} to the left of a {rw}", "a {rw} to the right of a {lw}",
    "a {l} to the left of a {r}", "a {r} to the right of a {l}",
)
TRAIN_RELATIONS = (0, 1, 2, 3, 4, 5)
HELDOUT_RELATIONS = (6, 7)  # the "to the ... of" phrasing with numerals


def compose_canvas(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Two batches of images (N, 1, H, W) side by side: (N, 1, H, 2W)."""
    if left.ndim != 4 or left.shape != right.shape:
        raise ValueError(f"left and right must be (N, 1, H, W) of one shape, got {tuple(left.shape)} "
                         f"and {tuple(right.shape)}")
    return torch.cat([left, right], dim=3)


def relation_caption(left_digit: int, right_digit: int, form: int) -> str:
    """Caption of a canvas with ``left_digit`` on the left and ``right_digit`` on the right, in
    phrasing ``form`` (an index of RELATION_TEMPLATES): form 0 gives "a 3 left of a 7", form 1
    "a 7 right of a 3" for the same canvas."""
    if not 0 <= form < len(RELATION_TEMPLATES):
        raise ValueError(f"form must be in 0..{len(RELATION_TEMPLATES) - 1}, got {form}")
    for digit in (left_digit, right_digit):
        if digit not in range(10):
            raise ValueError(f"digits must be 0..9, got {digit!r}")
    return RELATION_TEMPLATES[form].format(l=NUMERALS[left_digit], r=NUMERALS[right_digit],
                                           lw=DIGIT_WORDS[left_digit], rw=DIGIT_WORDS[right_digit])


def parse_relation(text: str) -> tuple[int, int]:
    """(left digit, right digit) of a relation caption: the inverse of relation_caption."""
    words = tokenize(text)
    digits = _digits(words)
    sides = [w for w in words if w in ("left", "right")]
    if len(digits) != 2 or len(sides) != 1:
        raise ValueError(f"a relation caption names two digits and one side, got {text!r}")
    first, second = digits
    return (first, second) if sides[0] == "left" else (second, first)


# --- tokens --------------------------------------------------------------------------------

def all_captions() -> list[str]:
    """Every caption the templates write: each digit with each choice of attribute words (None
    included) in every phrasing, and each ordered pair of digits in every relation phrasing."""
    options = [(None, *WORDS[name]) for name in ATTRIBUTES]
    captions = [caption({"digit": d, "thickness": t, "slant": s, "size": z}, k)
                for d in range(10) for t in options[0] for s in options[1] for z in options[2]
                for k in range(len(TEMPLATES))]
    return captions + [relation_caption(a, b, k) for a in range(10) for b in range(10)
                       for k in range(len(RELATION_TEMPLATES))]


class Vocabulary:
    """The words of :func:`all_captions` (training and held-out phrasings, so every evaluation
    caption encodes), sorted; token 0 is padding, 1 an unknown word, 2.. the words."""

    def __init__(self) -> None:
        words = sorted({w for text in all_captions() for w in tokenize(text)})
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: k for k, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions: list[str], length: int = MAX_LENGTH) -> torch.Tensor:
        """Captions -> LongTensor (N, length): word tokens, then padding (0)."""
        tokens = torch.full((len(captions), length), PAD, dtype=torch.long)
        for i, text in enumerate(captions):
            words = tokenize(text)
            if len(words) > length:
                raise ValueError(f"caption {text!r} has {len(words)} words, more than length={length}")
            tokens[i, :len(words)] = torch.tensor([self.index.get(w, UNKNOWN) for w in words])
        return tokens

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """LongTensor (N, L) -> captions: the words joined by spaces, padding dropped."""
        return [" ".join(self.words[t] for t in row if t != PAD) for row in tokens.tolist()]
