"""Proposals without an LLM: operators that decompose and recombine the best concepts
attribute by attribute.

A concept of a closed-vocabulary generator is read as the generator's attribute slots
(`tools.generators.base.SlotReader`: colour, kind, size, orientation, thickness, count,
background, ...), with its synonyms and plurals already made canonical. Each attribute value
gets the unit's evidence: the best score among the concepts scored for the unit that contain
it (the layer-wide sweep's atoms, the initial pool, every step since). From the best concept,
operators then add the best value of an attribute it lacks, swap a value for the next best
of its kind, drop a value (generalise), and merge the best concepts, most promising first;
random pairs of a colour and a kind come last. Open-vocabulary generators have no slots:
their operators merge the best concept with the best atoms and generalise by dropping words.

Used when the LLM's proposal is rejected twice in an iteration, when the LLM keeps failing,
or without an LLM: a weak model must not waste an iteration.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from tools.generators.base import SlotReader

ROUNDS = 3  # how deep into each attribute's ranking add and swap go
SPECIFIC = 3  # a concept with this many attributes is generalised before it is refined
EXPLORE = ("colour", "kind")  # explore: random pairs of a value of each of these slots
EXPLORE_PAIRS = 20


# --- evidence -----------------------------------------------------------------------------------
def attribute_ranking(scored: Sequence[tuple[str, float]], reader: SlotReader | None) -> dict[str, list[str]]:
    """Each slot's values, best first by the best score (larger is better) among the
    scored concepts or images holding them; slots ordered by their best value's score.
    Empty without a slot reader."""
    best: dict[str, dict[str, float]] = {}
    for concept, key in scored if reader is not None else ():
        for slot, values in reader.slots(concept).items():
            for value in values:
                known = best.setdefault(slot, {}).get(value)
                if known is None or key > known:
                    best[slot][value] = key
    slots = sorted(best, key=lambda s: max(best[s].values()), reverse=True)
    return {s: sorted(best[s], key=lambda v: best[s][v], reverse=True) for s in slots}


# --- candidates ---------------------------------------------------------------------------------
def candidates(ranked: list[str], ranking: dict[str, list[str]], reader: SlotReader | None,
               rng: random.Random, atoms: Sequence[str] = (), scenes: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """(concept, how it was made), most promising first. `ranked`: the unit's concepts,
    best first; `ranking`: `attribute_ranking` of its evidence; `reader`: the generator's
    slots (None for open vocabularies); `atoms`: the sweep's concepts, best first (used
    without slots); `scenes`: what was drawn in the images the unit fires on most."""
    for scene in scenes:
        yield scene, "the scene of an image the unit fires on strongly"
    if ranked:
        best = ranked[0]
        if reader is not None and len(reader.slots(best)) >= SPECIFIC:  # a specific best: prune before refining
            yield from generalisations(best, reader)
            yield from _swaps(best, ranking, reader, 0)
            yield from _additions(best, ranking, reader, 0)
        elif reader is not None:
            yield from _additions(best, ranking, reader, 0)
            yield from generalisations(best, reader)
            yield from _swaps(best, ranking, reader, 0)
        else:
            for atom in atoms[:ROUNDS]:
                yield merge(best, atom), f"add the best atom {atom!r} to {best!r}"
            yield from generalisations(best)
        for other in ranked[1:3]:
            yield merge(best, other), f"combine {best!r} + {other!r}"
        for depth in range(1, ROUNDS if reader is not None else 0):
            yield from _additions(best, ranking, reader, depth)
            yield from _swaps(best, ranking, reader, depth)
    yield from _explore(reader, rng)


def _explore(reader: SlotReader | None, rng: random.Random) -> Iterator[tuple[str, str]]:
    """Random pairs of a value of each EXPLORE slot (a colour and a kind)."""
    values = reader.slot_values() if reader is not None else {}
    if not all(values.get(slot) for slot in EXPLORE):
        return
    for _ in range(EXPLORE_PAIRS):
        concept = reader.compose({slot: [rng.choice(values[slot])] for slot in EXPLORE})
        if concept:
            yield concept, "explore the generator's vocabulary"


def _additions(best: str, ranking: dict[str, list[str]], reader: SlotReader, depth: int) -> Iterator[tuple[str, str]]:
    """`best` with the `depth`-th best value of each attribute it lacks, best-evidenced first."""
    parts = reader.slots(best)
    for slot, values in ranking.items():
        if not parts.get(slot) and depth < len(values):
            concept = reader.compose(parts | {slot: [values[depth]]})
            if concept:
                yield concept, f"add {slot} {values[depth]!r} to {best!r}"


def _swaps(best: str, ranking: dict[str, list[str]], reader: SlotReader, depth: int) -> Iterator[tuple[str, str]]:
    """`best` with one of its values swapped for the `depth`-th best other value of its kind."""
    parts = reader.slots(best)
    for slot, values in ranking.items():
        present = parts.get(slot, [])
        others = [v for v in values if v not in present]
        if present and depth < len(others):
            concept = reader.compose(parts | {slot: [others[depth]] + present[1:]})
            if concept:
                yield concept, f"swap {slot} {present[0]!r} for {others[depth]!r} in {best!r}"


def merge(first: str, second: str) -> str:
    """`first` followed by the words of `second` it lacks."""
    words = first.split()
    return " ".join(words + [w for w in second.split() if w not in words])


def generalisations(concept: str, reader: SlotReader | None = None) -> Iterator[tuple[str, str]]:
    """Shorter forms of `concept`: one attribute value (or, without slots, one word) left
    out, the last slot of a concept's words first."""
    parts = reader.slots(concept) if reader is not None else {}
    if parts:
        whole = reader.compose(parts)
        for slot in reversed(list(reader.slot_values())):
            for value in parts.get(slot, []):
                shorter = reader.compose(parts | {slot: [v for v in parts[slot] if v != value]})
                if shorter and shorter != whole:  # not a value the generator fills in anyway ("blobs")
                    yield shorter, f"generalise {concept!r} (without {value!r})"
        return
    words = concept.split()
    if "on" in words[1:]:
        yield " ".join(words[: words.index("on", 1)]), f"generalise {concept!r} (no background)"
    for i in range(len(words) if len(words) > 1 else 0):
        yield " ".join(words[:i] + words[i + 1:]), f"generalise {concept!r}"
