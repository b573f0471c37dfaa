"""Text queries that name the voice to separate, and their word tokens.

A query names a role (a voice of :data:`VOICES`) in one of several phrasings. The held-out
phrasings use only words of the training ones, in new combinations and orders: a text encoder
trained from scratch on the training phrasings cannot know an unseen word, so an evaluation
with them tests phrasing, not vocabulary. Phrasings that are true only sometimes are left out:
the target is always a voice present in the mixture, but any voice may be absent, so "the
highest voice" would not always name the soprano (nor "the lowest voice" the bass).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from flowsci.nn.text_encoder import PAD
from flowsci_domains.separation.chorales import VOICES

TRAIN_TEMPLATES = (
    "{role}",
    "the {role}",
    "the {role} part",
    "{role} line",
    "{role} voice",
    "the {role} voice only",
    "isolate the {role} voice",
    "extract the {role} part",
    "separate the {role} line",
    "only the {role} please",
    "give me the {role}",
)
HELDOUT_TEMPLATES = (
    "the {role} line",
    "{role} part please",
    "isolate the {role} part",
    "extract the {role} line",
    "separate the {role}",
    "give me the {role} voice",
    "the {role} part only",
    "only the {role} voice please",
)
MAX_QUERY_LENGTH = 8  # tokens; the longest phrasing has 5 words


def _words(text: str) -> list[str]:
    return text.lower().split()


def phrase(role: str, template: str) -> str:
    """``template`` with ``{role}`` filled in: phrase("bass", "the {role} line") = "the bass line"."""
    if role not in VOICES:
        raise ValueError(f"role must be one of {', '.join(VOICES)}, got {role!r}")
    if "{role}" not in template:
        raise ValueError(f"template must contain '{{role}}', got {template!r}")
    return template.format(role=role)


def queries(roles: Sequence[str], heldout: bool, rng: np.random.Generator) -> list[str]:
    """One random phrasing per role, from the held-out templates if ``heldout`` else the training ones."""
    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    return [phrase(role, templates[rng.integers(len(templates))]) for role in roles]


class QueryVocabulary:
    """The words of every phrasing of every role, sorted; token 0 is padding (``PAD``), 1.. the words."""

    def __init__(self) -> None:
        words = {w for template in TRAIN_TEMPLATES + HELDOUT_TEMPLATES for role in VOICES
                 for w in _words(phrase(role, template))}
        self.words = ["<pad>", *sorted(words)]
        self.index = {w: k for k, w in enumerate(self.words) if k != PAD}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Queries -> LongTensor (N, MAX_QUERY_LENGTH): their lower-cased words' tokens, then PAD."""
        tokens = torch.full((len(texts), MAX_QUERY_LENGTH), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            words = _words(text)
            if len(words) > MAX_QUERY_LENGTH:
                raise ValueError(f"query {text!r} has {len(words)} words, more than "
                                 f"MAX_QUERY_LENGTH={MAX_QUERY_LENGTH}")
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise ValueError(f"query {text!r} has the unknown word(s) {unknown}; "
                                 f"the vocabulary is {self.words[1:]}")
            tokens[i, :len(words)] = torch.tensor([self.index[w] for w in words], dtype=torch.long)
        return tokens

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """LongTensor (N, L) -> queries: the words joined by spaces, padding dropped."""
        return [" ".join(self.words[t] for t in row if t != PAD) for row in tokens.tolist()]
