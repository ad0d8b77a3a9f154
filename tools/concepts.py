"""What may be scored as a concept: a short text the image generator can draw.

One check for every way a concept comes in (`line score`, chat's `/score`, the concept
bank): empty text, text past `MAX_CONCEPT_CHARS`, control characters and concepts the
generator can draw nothing of are refused before any image is made.
"""

from __future__ import annotations

import unicodedata

from tools.errors import LineError
from tools.generators.base import ImageGenerator

MAX_CONCEPT_CHARS = 100


def tidy_concept(text: str) -> str:
    """`text` with its whitespace collapsed to single spaces."""
    return " ".join(str(text).split())


def text_problem(concept: str) -> str | None:
    """Why `concept` is no concept whatever the generator (None when it may be one):
    empty, too long, or holding control characters."""
    concept = tidy_concept(concept)
    if not concept:
        return "the concept is empty"
    if len(concept) > MAX_CONCEPT_CHARS:
        return f"the concept is {len(concept)} characters long (at most {MAX_CONCEPT_CHARS})"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in concept):
        return f"the concept {concept!r} holds control characters"
    return None


def concept_problem(concept: str, generator: ImageGenerator) -> str | None:
    """Why `concept` cannot be scored (None when it can)."""
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
