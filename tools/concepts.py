"""What makes a concept acceptable: one rule for every door.

Whoever proposes a concept (`line score`, the labelling loop's LLM, an operator, the
summary, a person in review or in chat, the chat agent's tools, the concept bank, the
evals), it is scored only when `ConceptRules.accept` says so:

1. it is a short text: not empty, at most `MAX_CONCEPT_CHARS` characters and
   `MAX_CONCEPT_WORDS` words, no control characters;
2. the image generator can draw something of it (operators, which must not make labels
   with words the images ignore, ask for every word to be drawn: `fully_drawn=True`);
3. it is new (unless duplicates are allowed, LINE's paper preset `loop.dedup = false`): not
   the same words after normalising (case, articles, plurals, punctuation, word order); for
   generators that name their scenes not the same scene (the exact test: such a generator
   draws a paraphrase as the same scene, and text embeddings would call different scenes
   alike, "vertical stripes" and "horizontal stripes" at 0.94); for open vocabularies not a
   near paraphrase by text-embedding similarity.

Rules 1 and 2 hold whatever the settings: an undrawable concept is never scored as grey
canvases.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tools.errors import LineError
from tools.generators.base import ImageGenerator
from tools.text import TextEmbedder, normalise

MAX_CONCEPT_CHARS = 100
# The procedural generator's richest scenes take ten words ("large thin horizontal black and
# teal waves on pink background"); the LLM's answer schema asks for six at most.
MAX_CONCEPT_WORDS = 10

__all__ = ["MAX_CONCEPT_CHARS", "MAX_CONCEPT_WORDS", "ConceptRules", "Verdict", "check_concept", "concept_problem",
           "text_problem", "tidy_concept"]


class _Tried(Protocol):
    def tried(self) -> list[str]: ...


def tidy_concept(text: str) -> str:
    """`text` with its whitespace collapsed to single spaces."""
    return " ".join(str(text).split())


def text_problem(concept: str) -> str | None:
    """Why `concept` is no concept whatever the generator (None when it may be one):
    not text, empty, too long, or holding control characters."""
    if not isinstance(concept, str):
        return f"the concept is a {type(concept).__name__}, not text"
    concept = tidy_concept(concept)
    if not concept:
        return "the concept is empty"
    if len(concept) > MAX_CONCEPT_CHARS:
        return f"the concept is {len(concept)} characters long (at most {MAX_CONCEPT_CHARS})"
    if len(concept.split()) > MAX_CONCEPT_WORDS:
        return f"the concept is {len(concept.split())} words long (at most {MAX_CONCEPT_WORDS})"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in concept):
        return f"the concept {concept!r} holds control characters"
    return None


def concept_problem(concept: str, generator: ImageGenerator) -> str | None:
    """Why `concept` cannot be scored (None when it can): rules 1 and 2."""
    problem = text_problem(concept)
    if problem is None and not generator.interpret(tidy_concept(concept)).drawable:
        problem = f"the image generator can draw nothing of {tidy_concept(concept)!r}"
    return problem


def check_concept(concept: str, generator: ImageGenerator) -> str:
    """`concept` ready to score (whitespace collapsed), or a LineError saying what is wrong."""
    problem = concept_problem(concept, generator)
    if problem is None:
        return tidy_concept(concept)
    categories = ", ".join(generator.vocabulary())
    fix = f"Describe what to draw in 1 to 6 words{f' ({categories})' if categories else ''}, e.g. 'red stripes'."
    raise LineError(f"{problem}.", fix)


@dataclass(frozen=True)
class Verdict:
    """`duplicate_of` is the earlier concept it repeats; `undrawable` when it is refused for
    what it is (rules 1 and 2: too long, empty, nothing of it drawable)."""

    duplicate_of: str | None = None
    reason: str = ""
    undrawable: bool = False

    @property
    def accepted(self) -> bool:
        return self.duplicate_of is None and not self.undrawable


class ConceptRules:
    """The one rule for an acceptable concept (module docstring), for one generator.

    Args:
        generator: what draws the concepts; its `interpret` says what it can draw and, for
            generators that name their scenes, the scene's canonical form.
        embedder: text embeddings for paraphrases of open vocabularies (None: words only).
        threshold: the embedding similarity from which two concepts are paraphrases.
        dedup: refuse repeats of concepts tried already (False: LINE's paper preset).
    """

    def __init__(self, generator: ImageGenerator, embedder: TextEmbedder | None = None, threshold: float = 0.88,
                 dedup: bool = True):
        self.generator, self.embedder, self.threshold, self.dedup = generator, embedder, threshold, dedup

    def accept(self, concept: str, history: _Tried | Iterable[str] = (), fully_drawn: bool = False,
               require_new: bool | None = None) -> Verdict:
        """Whether `concept` may be scored, given the concepts `history` tried (a History or
        a list of concepts); with `fully_drawn`, every word of it must be drawn; with
        `require_new`, it must be new whatever `dedup` says (operators look for new concepts
        even in the paper preset)."""
        problem = text_problem(concept)
        if problem is not None:
            return Verdict(undrawable=True, reason=problem)
        interpretation = self.generator.interpret(tidy_concept(concept))
        if not interpretation.drawable:
            return Verdict(undrawable=True, reason="the image generator can draw nothing of it")
        if fully_drawn and interpretation.ignored:
            return Verdict(undrawable=True, reason=f"the image generator ignores {', '.join(interpretation.ignored)}")
        if not (self.dedup if require_new is None else require_new):
            return Verdict()
        tried = history.tried() if hasattr(history, "tried") else list(history)
        return self._repeat(concept, interpretation.canonical, tried)

    def _repeat(self, concept: str, canonical: str | None, tried: list[str]) -> Verdict:
        key = normalise(concept)
        for earlier in tried:
            if normalise(earlier) == key:
                return Verdict(earlier, "same words")
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
