"""Proposals without an LLM: operators that decompose and recombine the best concepts
attribute by attribute.

A concept of a closed-vocabulary generator is read as slots (colour, kind, size,
orientation, thickness, count, background). Each attribute value gets the unit's evidence:
the best score among the concepts scored for the unit that contain it (the layer-wide
sweep's atoms, the initial pool, every step since). From the best concept, operators then
add the best value of an attribute it lacks, swap a value for the next best of its kind,
drop a word (generalise), and merge the best concepts, most promising first; random pairs
of the generator's words come last. Open-vocabulary generators have no slots: their
operators merge the best concept with the best atoms and generalise by dropping words.

Used when the LLM's proposal is rejected twice in an iteration, when the LLM keeps failing,
or without an LLM: a weak model must not waste an iteration.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

GROUP_OF = {"colours": "colour", "shapes": "kind", "patterns": "kind", "textures": "kind",
            "sizes": "size", "counts": "count", "thickness": "thickness", "orientations": "orientation"}
ORDER = ("count", "size", "thickness", "orientation", "colour", "kind")  # the words' order in a concept
ROUNDS = 3  # how deep into each attribute's ranking add and swap go
SPECIFIC = 3  # a concept with this many attributes is generalised before it is refined
_EXPLORE_CATEGORIES = ("colours", "patterns", "shapes", "textures")  # explore: a colour and a kind

Slots = dict[str, list[str]]  # group -> values ("background" holds a background colour)


# --- reading and writing concepts as slots ----------------------------------------------------
def slots(concept: str, vocabulary: dict[str, list[str]]) -> Slots:
    """The attribute values of `concept`, by group; words outside the vocabulary are left out."""
    words = concept.lower().replace("-", " ").split()
    lexicon = _lexicon(vocabulary)
    result: Slots = {}
    in_background, i = False, 0
    while i < len(words):
        for n in (2, 1):
            phrase = " ".join(words[i:i + n])
            hit = next((lexicon[form] for form in _singular_forms(phrase) if form in lexicon), None)
            if hit:
                group = "background" if in_background and hit[0] == "colour" else hit[0]
                if hit[1] not in result.setdefault(group, []):
                    result[group].append(hit[1])
                i += n
                break
        else:
            in_background = in_background or words[i] in ("on", "against", "over")
            i += 1
    return result


def compose(parts: Slots, vocabulary: dict[str, list[str]]) -> str:
    """Words of a concept holding `parts`: "small red polka dots on blue background"."""
    shapes = set(vocabulary.get("shapes", ()))
    words = []
    for group in ORDER:
        values = parts.get(group, [])
        if group == "colour":
            words.append(" and ".join(values))
        elif group == "kind" and values:
            one = parts.get("count") == ["one"]
            words.append(_plural(values[0]) if values[0] in shapes and not one else values[0])
        else:
            words += values
    if parts.get("background"):
        words.append(f"on {parts['background'][0]} background")
    return " ".join(w for w in words if w)


def _lexicon(vocabulary: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    return {word: (GROUP_OF[category], word) for category, words in vocabulary.items()
            if category in GROUP_OF for word in words}


def _singular_forms(phrase: str) -> list[str]:
    """The phrase, then without a plural ending: "circles" -> "circle", "crosses" -> "cross"."""
    forms = [phrase]
    for ending in ("s", "es"):
        if phrase.endswith(ending) and len(phrase) > len(ending) + 2:
            forms.append(phrase[: -len(ending)])
    return forms


def _plural(kind: str) -> str:
    return kind if kind.endswith("s") and kind != "cross" else kind + ("es" if kind.endswith(("s", "x")) else "s")


# --- evidence -----------------------------------------------------------------------------------
def attribute_ranking(scored: Sequence[tuple[str, float]], vocabulary: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each group's values, best first by the best score (larger is better) among the
    scored concepts or images holding them; groups ordered by their best value's score."""
    best: dict[str, dict[str, tuple]] = {}
    for concept, key in scored:
        for group, values in slots(concept, vocabulary).items():
            for value in values:
                known = best.setdefault(group, {}).get(value)
                if known is None or key > known:
                    best[group][value] = key
    groups = sorted(best, key=lambda g: max(best[g].values()), reverse=True)
    return {g: sorted(best[g], key=lambda v: best[g][v], reverse=True) for g in groups}


# --- candidates ---------------------------------------------------------------------------------
def candidates(ranked: list[str], ranking: dict[str, list[str]], vocabulary: dict[str, list[str]],
               rng: random.Random, atoms: Sequence[str] = (), scenes: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """(concept, how it was made), most promising first. `ranked`: the unit's concepts,
    best first; `ranking`: `attribute_ranking` of its evidence; `atoms`: the sweep's
    concepts, best first (used where the vocabulary has no slots); `scenes`: what was drawn
    in the images the unit fires on most."""
    for scene in scenes:
        yield scene, "the scene of an image the unit fires on strongly"
    if ranked:
        best = ranked[0]
        if vocabulary and len(slots(best, vocabulary)) >= SPECIFIC:  # a specific best: prune before refining
            yield from generalisations(best, vocabulary)
            yield from _swaps(best, ranking, vocabulary, 0)
            yield from _additions(best, ranking, vocabulary, 0)
        elif vocabulary:
            yield from _additions(best, ranking, vocabulary, 0)
            yield from generalisations(best, vocabulary)
            yield from _swaps(best, ranking, vocabulary, 0)
        else:
            for atom in atoms[:ROUNDS]:
                yield merge(best, atom), f"add the best atom {atom!r} to {best!r}"
            yield from generalisations(best)
        for other in ranked[1:3]:
            yield merge(best, other), f"combine {best!r} + {other!r}"
        for depth in range(1, ROUNDS if vocabulary else 0):
            yield from _additions(best, ranking, vocabulary, depth)
            yield from _swaps(best, ranking, vocabulary, depth)
    colours = vocabulary.get("colours", [])
    kinds = [w for category in _EXPLORE_CATEGORIES[1:] for w in vocabulary.get(category, [])]
    for _ in range(20 if colours and kinds else 0):
        parts = {"colour": [rng.choice(colours)], "kind": [rng.choice(kinds)]}
        yield compose(parts, vocabulary), "explore the generator's vocabulary"


def _additions(best: str, ranking: dict[str, list[str]], vocabulary: dict[str, list[str]],
               depth: int) -> Iterator[tuple[str, str]]:
    """`best` with the `depth`-th best value of each attribute it lacks, best-evidenced first."""
    parts = slots(best, vocabulary)
    for group, values in ranking.items():
        if not parts.get(group) and depth < len(values):
            yield compose(parts | {group: [values[depth]]}, vocabulary), f"add {group} {values[depth]!r} to {best!r}"


def _swaps(best: str, ranking: dict[str, list[str]], vocabulary: dict[str, list[str]],
           depth: int) -> Iterator[tuple[str, str]]:
    """`best` with one of its values swapped for the `depth`-th best other value of its kind."""
    parts = slots(best, vocabulary)
    for group, values in ranking.items():
        present = parts.get(group, [])
        others = [v for v in values if v not in present]
        if present and depth < len(others):
            swapped = compose(parts | {group: [others[depth]] + present[1:]}, vocabulary)
            yield swapped, f"swap {group} {present[0]!r} for {others[depth]!r} in {best!r}"


def merge(first: str, second: str) -> str:
    """`first` followed by the words of `second` it lacks."""
    words = first.split()
    return " ".join(words + [w for w in second.split() if w not in words])


def generalisations(concept: str, vocabulary: dict[str, list[str]] | None = None) -> Iterator[tuple[str, str]]:
    """Shorter forms of `concept`: one attribute (or, without a vocabulary, one word) left out."""
    parts = slots(concept, vocabulary) if vocabulary else {}
    if parts:
        for group in ["background", *reversed(ORDER)]:
            for value in parts.get(group, []):
                rest = [v for v in parts[group] if v != value]
                yield compose(parts | {group: rest}, vocabulary), f"generalise {concept!r} (without {value!r})"
        return
    words = concept.split()
    if "on" in words[1:]:
        yield " ".join(words[: words.index("on", 1)]), f"generalise {concept!r} (no background)"
    for i in range(len(words) if len(words) > 1 else 0):
        yield " ".join(words[:i] + words[i + 1:]), f"generalise {concept!r}"
