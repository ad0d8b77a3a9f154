"""Deduplication: is a proposed concept one already tried?

Three tests, cheapest first: the same words after normalising (case, articles, plurals,
punctuation, word order); the same scene for generators with a canonical form; a near
paraphrase by text-embedding similarity. A concept the generator cannot draw at all is
rejected too, before any image is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tools.generators.base import ImageGenerator
from tools.text import TextEmbedder

_ARTICLES = {"a", "an", "the", "some", "of", "with"}


def normalise(concept: str) -> str:
    """Lower case, no punctuation or articles, singular words, sorted."""
    words = re.findall(r"[a-z0-9]+", concept.lower())
    return " ".join(sorted(_singular(w) for w in words if w not in _ARTICLES))


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class Verdict:
    """`duplicate_of` is the earlier concept it repeats; `undrawable` when nothing of it can be drawn."""

    duplicate_of: str | None = None
    reason: str = ""
    undrawable: bool = False

    @property
    def accepted(self) -> bool:
        return self.duplicate_of is None and not self.undrawable


class Deduplicator:
    def __init__(self, generator: ImageGenerator, embedder: TextEmbedder | None, threshold: float = 0.88):
        self.generator, self.embedder, self.threshold = generator, embedder, threshold

    def check(self, concept: str, tried: list[str]) -> Verdict:
        if not normalise(concept):
            return Verdict(undrawable=True, reason="empty concept")
        key = normalise(concept)
        for earlier in tried:
            if normalise(earlier) == key:
                return Verdict(earlier, "same words")
        canonical = self.generator.interpret(concept).canonical
        if canonical == "":
            return Verdict(undrawable=True, reason="the image generator can draw nothing of it")
        if canonical is not None:
            for earlier in tried:
                if self.generator.interpret(earlier).canonical == canonical:
                    return Verdict(earlier, f"same scene ({canonical})")
        if self.embedder is not None and tried:
            similarity = self.embedder.similarity(concept, tried)
            best = int(similarity.argmax())
            if similarity[best] >= self.threshold:
                return Verdict(tried[best], f"paraphrase (similarity {similarity[best]:.2f})")
        return Verdict()
