"""Proposals without an LLM: operators on the best concepts and the generator's vocabulary.

Used when the LLM keeps failing (or none is configured): a weak model must not end a run.
"""

from __future__ import annotations

import random
from typing import Iterator

_EXPLORE_CATEGORIES = ("colours", "patterns", "shapes", "textures")


def candidates(ranked: list[str], vocabulary: dict[str, list[str]], rng: random.Random) -> Iterator[tuple[str, str]]:
    """(concept, how it was made), most promising first."""
    if ranked:
        best = ranked[0]
        for other in ranked[1:3]:
            yield merge(best, other), f"combine {best!r} + {other!r}"
        yield from _vary(best, vocabulary, rng)
        yield from generalisations(best)
    categories = [c for c in _EXPLORE_CATEGORIES if vocabulary.get(c)]
    for _ in range(20 if categories else 0):
        first, second = rng.sample(categories, 2) if len(categories) > 1 else (categories[0],) * 2
        concept = f"{rng.choice(vocabulary[first])} {rng.choice(vocabulary[second])}"
        yield concept, "explore the generator's vocabulary"


def merge(first: str, second: str) -> str:
    """`first` followed by the words of `second` it lacks."""
    words = first.split()
    return " ".join(words + [w for w in second.split() if w not in words])


def _vary(concept: str, vocabulary: dict[str, list[str]], rng: random.Random) -> Iterator[tuple[str, str]]:
    """Swap one word of `concept` for another word of the same vocabulary category."""
    category_of = {word: category for category, words in vocabulary.items() for word in words}
    words = concept.split()
    for i, word in enumerate(words):
        category = category_of.get(word)
        if category is None:
            continue
        alternatives = [w for w in vocabulary[category] if w != word]
        for alternative in rng.sample(alternatives, min(3, len(alternatives))):
            yield " ".join(words[:i] + [alternative] + words[i + 1:]), f"vary {word!r} in {concept!r}"


def generalisations(concept: str) -> Iterator[tuple[str, str]]:
    """Shorter forms of `concept`: without its background phrase, then without one word."""
    words = concept.split()
    if "on" in words[1:]:
        yield " ".join(words[: words.index("on", 1)]), f"generalise {concept!r} (no background)"
    for i in range(len(words) if len(words) > 1 else 0):
        yield " ".join(words[:i] + words[i + 1:]), f"generalise {concept!r}"
