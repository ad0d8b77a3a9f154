"""Deduplication: is a proposed concept one already tried?

Tests, cheapest first: the same words after normalising (case, articles, plurals,
punctuation, word order); then, for generators with a canonical form, the same scene (the
exact test: such a generator draws a paraphrase as the same scene, and text embeddings
would call different scenes alike, "vertical stripes" and "horizontal stripes" at 0.94);
for open-vocabulary generators, a near paraphrase by text-embedding similarity. A concept
the generator cannot draw at all is rejected too, before any image is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from tools.generators.base import ImageGenerator
from tools.text import TextEmbedder, normalise


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
        if canonical is not None:  # the generator names its scenes: same scene is the exact test
            for earlier in tried:
                if self.generator.interpret(earlier).canonical == canonical:
                    return Verdict(earlier, f"same scene ({canonical})")
            return Verdict()
        if self.embedder is not None and tried:
            similarity = self.embedder.similarity(concept, tried)
            best = int(similarity.argmax())
            if similarity[best] >= self.threshold:
                return Verdict(tried[best], f"paraphrase (similarity {similarity[best]:.2f})")
        return Verdict()
