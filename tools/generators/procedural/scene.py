"""The scene: a concept parsed and normalised into attribute slots (`Scene`), and the
seeded random streams that fill in, per seed, whatever the scene leaves open.

Every attribute has its own stream, seeded from (seed, stream name, VERSION) with a stable
hash, so two scenes that differ in one attribute share everything else at the same seed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from tools.generators.procedural.vocabulary import _CATEGORY, CLASH, COLOURS, COUNT_WORDS, _plural

VERSION = 1  # the drawings' version: part of the generator's id and of every stream's seed

# A scene's attribute slots, in the order their words come in a concept.
SLOTS = ("count", "size", "thickness", "orientation", "colour", "kind", "background", "avoid")


@dataclass(frozen=True)
class Scene:
    """The parsed, normalised scene; `None` fields are drawn at random per seed."""

    kind: str | None = None
    ink: tuple[str, ...] = ()
    bg: str | None = None
    avoid: tuple[str, ...] = ()  # colours an unspecified background must not clash with
    count: int | None = None
    size: str | None = None
    thickness: str | None = None
    orientation: str | None = None

    @property
    def category(self) -> str | None:
        return _CATEGORY.get(self.kind) if self.kind else None

    def slots(self) -> dict[str, list[str]]:
        """The values the scene fixes, by slot, in `SLOTS` order; a slot left to the seed is
        absent, and a scene with nothing drawable has none. Values are canonical words:
        "colour" the ink colours, "kind" one shape (singular), pattern, texture or "blobs",
        "count" a number word, "background" one colour, "avoid" the colours a random
        background keeps away from ("non-red")."""
        if self.kind is None:
            return {}
        values = {
            "count": [COUNT_WORDS[self.count - 1]] if self.count else [],
            "size": [self.size] if self.size else [],
            "thickness": [self.thickness] if self.thickness else [],
            "orientation": [self.orientation] if self.orientation else [],
            "colour": list(self.ink),
            "kind": [self.kind],
            "background": [self.bg] if self.bg else [],
            "avoid": list(self.avoid),
        }
        return {slot: values[slot] for slot in SLOTS if values[slot]}

    def canonical(self) -> str:
        if self.kind is None:
            return ""
        cat = self.category
        parts: list[str] = []
        if cat in ("shape", "blobs") and self.count is not None:
            parts.append(COUNT_WORDS[self.count - 1])
        parts += [w for w in (self.size, self.thickness, self.orientation) if w]
        colours = " and ".join(self.ink)
        if self.kind == "plain":
            parts += ["plain", colours]
        else:
            name = self.kind
            if cat == "shape" and self.count != 1:
                name = _plural(name)
            if cat == "blobs" and self.count == 1:
                name = "blob"
            parts += [colours, name]
        if self.bg:
            parts.append(f"on {self.bg} background")
        elif self.avoid:
            parts.append("on " + " ".join(f"non-{c}" for c in self.avoid) + " background")
        return " ".join(p for p in parts if p)


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class _Streams:
    """One independent numpy Generator per attribute, seeded from (seed, stream name)."""

    def __init__(self, seed: int):
        self.seed = int(seed) % (1 << 64)
        self._cache: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        if name not in self._cache:
            self._cache[name] = np.random.default_rng([self.seed, _stable(name), VERSION])
        return self._cache[name]


_SIZE_Z = {"tiny": 0.05, "small": 0.25, "medium": 0.5, "large": 0.85}
_ORIENT_ANGLE = {"horizontal": math.pi / 2, "vertical": 0.0, "diagonal": math.pi / 4}


def _colours(scene: Scene, st: _Streams) -> tuple[list[str], str]:
    """The ink colours and the background colour drawn for `scene` (random where unspecified)."""
    ink = list(scene.ink)
    if not ink:
        options = [c for c in COLOURS if not (scene.bg and c in CLASH[scene.bg])]
        ink = [options[int(st["ink"].integers(len(options)))]]
    bg = scene.bg
    if bg is None:
        order = st["bg"].permutation(len(COLOURS))
        names = list(COLOURS)
        bg = next(names[i] for i in order if names[i] != "gray"
                  and not any(names[i] in CLASH[c] for c in (*ink, *scene.avoid)))
    return ink, bg


def _size_z(scene: Scene, st: _Streams) -> float:
    if scene.size:
        return _SIZE_Z[scene.size] + st["size-jitter"].uniform(-0.04, 0.04)
    return float(st["size"].uniform(0.15, 0.9))


def _angle(scene: Scene, st: _Streams) -> float:
    """Angle of the pattern's normal: 0 = vertical stripes, pi/2 = horizontal."""
    rng = st["angle"]
    if scene.orientation is None:
        return float(rng.uniform(0, math.pi))
    a = _ORIENT_ANGLE[scene.orientation] + rng.uniform(-0.03, 0.03)
    if scene.orientation == "diagonal" and rng.random() < 0.5:
        a = math.pi - a
    return a
