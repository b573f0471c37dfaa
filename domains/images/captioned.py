"""Caption conditioning of the images domain: which caption goes with which training image, the
requests an evaluation draws, and how the samples are judged.

Two modes (``domain.captions``):

* ``attributes``: one digit per image with a caption naming its digit and the attribute words of
  :mod:`captions` (thickness, slant, size bins cut at the training tertiles), in one of the
  training phrasings drawn by the data seed. Training images whose (digit, thickness, slant) is
  a held-out combination are left out, so that the evaluation can ask for combinations the flow
  never saw, in phrasings it never read.
* ``relations``: a two-digit canvas (H × 2W), each the side-by-side of two images of the same
  split drawn by the data seed, captioned "a 3 left of a 7" or "a 7 right of a 3" (one of the
  training phrasings): the words alone do not say which digit goes left; their order does.

Everything here is a pure function of the data file and ``data.seed``, so training and every
later evaluation see the same captions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from flowsci_domains.images.captions import (
    HELDOUT_RELATIONS,
    HELDOUT_TEMPLATES,
    TRAIN_RELATIONS,
    TRAIN_TEMPLATES,
    caption,
    compose_canvas,
    describe,
    heldout_combinations,
    is_heldout,
    relation_caption,
)

MODES = ("none", "attributes", "relations")
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2, "heldout": 3}


@dataclasses.dataclass
class CaptionedImages:
    """images (N, C, H, W') in [0, 1] (W' = 2W for relations), their captions, and what each
    caption asks for: attribute dicts (``describe``'s) or (left digit, right digit) pairs."""

    images: torch.Tensor
    captions: list[str]
    requests: list


def captioned_split(mode: str, split: str, images: torch.Tensor, labels: torch.Tensor,
                    bins: dict[str, tuple[float, float]], seed: int) -> CaptionedImages:
    """The captioned images of one split (images (N, C, H, W) in [0, 1], labels (N,)).

    attributes: every image, except held-out combinations in the training split. relations: N
    canvases, the left images a permutation of the split, the right ones another. Phrasings are
    the training ones in every split (the held-out phrasings are kept for :func:`heldout`).
    """
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    if mode == "attributes":
        described = describe(images, labels, bins)
        keep = [i for i, d in enumerate(described)
                if split != "train" or not is_heldout(d, heldout_combinations(seed))]
        templates = rng.choice(TRAIN_TEMPLATES, size=len(keep))
        return CaptionedImages(images[keep], [caption(described[i], int(k)) for i, k in zip(keep, templates,
                                                                                           strict=True)],
                               [described[i] for i in keep])
    if mode == "relations":
        left, right = rng.permutation(len(images)), rng.permutation(len(images))
        pairs = [(int(labels[a]), int(labels[b])) for a, b in zip(left, right, strict=True)]
        forms = rng.choice(TRAIN_RELATIONS, size=len(pairs))
        captions = [relation_caption(a, b, int(k)) for (a, b), k in zip(pairs, forms, strict=True)]
        return CaptionedImages(compose_canvas(images[left], images[right]), captions, pairs)
    raise ValueError(f"domain.captions must be one of {', '.join(MODES[1:])} here, got {mode!r}")


def heldout(mode: str, n: int, seed: int) -> tuple[list[str], list]:
    """n evaluation captions in the held-out phrasings, and their requests: for attributes, the
    held-out (digit, thickness, slant) combinations in turn; for relations, digit pairs in turn
    (all 100 ordered pairs, then again)."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS["heldout"]])
    if mode == "attributes":
        combos = sorted(heldout_combinations(seed))
        keys = ("digit", "thickness", "slant")
        requests = [dict(zip(keys, combos[i % len(combos)], strict=True), size=None) for i in range(n)]
        templates = rng.choice(HELDOUT_TEMPLATES, size=n)
        return [caption(r, int(k)) for r, k in zip(requests, templates, strict=True)], requests
    pairs = [(i % 100 // 10, i % 10) for i in range(n)]
    forms = rng.choice(HELDOUT_RELATIONS, size=n)
    return [relation_caption(a, b, int(k)) for (a, b), k in zip(pairs, forms, strict=True)], pairs
