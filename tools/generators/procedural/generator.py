"""Procedural image generator: draws simple concepts from words, with no model weights.

`ProceduralGenerator` is the embedded default text-to-image generator. It understands a
small vocabulary (below), renders each concept deterministically per seed with vectorised
numpy drawing, and reports what of a concept it could not draw (`interpret().ignored`).

Vocabulary (canonical word, then the synonyms it also accepts; plurals are accepted)
-------------------------------------------------------------------------------------
colours   red (crimson, scarlet), orange, yellow (gold), green, teal, cyan (turquoise,
          aqua), blue, navy ("navy blue"), purple (violet, lavender), magenta (fuchsia),
          pink (rose), brown (tan, maroon, chocolate), black, white, gray (grey, silver)
shapes    circle (disc, disk, circular), ellipse (oval), square, rectangle (rectangular),
          triangle (triangular), diamond (rhombus), pentagon, hexagon (hexagonal),
          octagon, star (star-shaped), heart, cross (plus), ring (annulus, donut),
          crescent; and "blobs" (blob, splotch): irregular soft shapes
patterns  stripes (striped, stripy, lines, bars), polka dots (dots, dotted, spots,
          spotted), checkerboard (checkered, checkers, chequered, checks), grid (lattice,
          mesh), zigzag (zig zag, chevrons), waves (wavy), spiral (swirl), concentric
          rings (concentric circles, bullseye, target)
textures  noise (noisy, static), speckle (speckled, specks, flecks), gradient,
          plain (solid, flat, uniform, smooth)
counts    one .. nine, 1 .. 9, single, pair; several/many/multiple mean "more than one"
sizes     tiny (minuscule), small (little), medium, large (big, huge, giant)
thickness thin (narrow, fine), thick (wide, broad, bold)   -- for patterns
orient.   horizontal, vertical, diagonal (slanted, oblique) -- for stripes, waves, zigzag,
          grid, checkerboard, polka dots

Grammar
-------
A concept is a bag of these words; order does not matter except for two rules:

* Colours after "on"/"against"/"over" (until "with"), or right before
  "background"/"backdrop", colour the background: "three yellow stars on a blue
  background", "red circle on black", "blue background with red dots".
* At most one kind (shape, pattern, texture) is drawn; a second one is ignored.
* "non-<colour>" (or "not <colour>") constrains a background left unspecified: it is
  drawn at random but never close to that colour ("gray circles on non-red background").

Colours without a kind draw coloured blobs ("red" == "red blobs"); a background colour
alone draws a plain fill ("blue background" == "plain blue"). For patterns and textures,
and for a single shape, two or more colours with no background mean "ink on the last
colour": "black and white stripes" == "black stripes on white background". Several shapes
alternate their colours. A singular shape noun means one shape ("a red circle" == "one
red circle"); a plural with no number draws 2 to 5 of them. Articles and filler words
("a", "of", "with", "photo", "image", "realistic", "pattern", "texture", "shapes", ...)
are skipped; every other word the generator cannot draw (and every modifier that does not
apply to the kind, e.g. "horizontal" for a circle) is listed in `Interpretation.ignored`.
`Interpretation.canonical` is a normal form of the scene ("red polka dots", "three yellow
stars on blue background"); concepts with the same canonical form render the same images,
and it is "" when nothing drawable was understood ("golden retriever").

Randomness and counterfactuals
------------------------------
Whatever the concept leaves open is drawn per seed: positions, rotations, phases, stripe
frequency, exact hue within the colour's range, size when unspecified, colours when
unspecified, and the background colour when unspecified (never gray, never too close to
an ink colour). Every attribute has its own random stream, seeded from (seed, stream
name) with a stable hash -- not from the concept text -- so that two scenes differing in
one attribute share everything else at the same seed: "red stripes" and "gray stripes"
at seed 3 have the same frequency, angle and phase; "small red circle" and "large blue
circle" have the same position. `ablate()` relies on this: it rewrites the scene with
one concept removed (a colour becomes a neutral colour such as gray; a shape or pattern
becomes plain blobs in the same colours; a size, thickness or orientation is swapped for
its opposite; a count n becomes one, and one becomes three; anything the prompt does not
contain changes nothing). When an ink colour is ablated and the background was left
unspecified, the result says "on non-<colour> background", so the random background
stays the one the original ink allowed: "red circles" minus "red" is "gray circles on
non-red background", identical to "red circles" at every seed except where it was red.
An ablation can only remove what the prompt states: "stripes" minus "red" is unchanged
even at seeds where the random stripe colour happens to be red.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterator

import numpy as np
from PIL import Image

from tools.generators.base import Atom, Interpretation

VERSION = 1
BATCH_SIZE = 64  # images per batch of `batches` (progress steps)

# --------------------------------------------------------------------------- vocabulary

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (250, 215, 30),
    "green": (40, 160, 50),
    "teal": (0, 128, 128),
    "cyan": (40, 215, 235),
    "blue": (30, 70, 220),
    "navy": (15, 25, 100),
    "purple": (125, 40, 175),
    "magenta": (220, 30, 200),
    "pink": (250, 150, 190),
    "brown": (120, 70, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
ACHROMATIC = {"black", "white", "gray"}
COLOUR_SYNONYMS = {
    "grey": "gray", "silver": "gray", "crimson": "red", "scarlet": "red", "gold": "yellow",
    "turquoise": "cyan", "aqua": "cyan", "violet": "purple", "lavender": "purple",
    "fuchsia": "magenta", "rose": "pink", "tan": "brown", "maroon": "brown",
    "chocolate": "brown",
}
# Pairs too close to be ink and background of the same unspecified scene.
_CLASHES = [
    ("red", "orange"), ("red", "pink"), ("red", "magenta"), ("red", "brown"),
    ("orange", "yellow"), ("orange", "brown"), ("yellow", "white"), ("green", "teal"),
    ("teal", "cyan"), ("cyan", "blue"), ("blue", "navy"), ("blue", "purple"),
    ("navy", "black"), ("navy", "purple"), ("purple", "magenta"), ("magenta", "pink"),
    ("pink", "white"), ("brown", "black"),
]
CLASH: dict[str, set[str]] = {c: {c} for c in COLOURS}
for _a, _b in _CLASHES:
    CLASH[_a].add(_b)
    CLASH[_b].add(_a)
NEUTRALS = ["gray", "white", "black", "brown", "teal"]  # replacements when ablating a colour

SHAPES = ["circle", "ellipse", "square", "rectangle", "triangle", "diamond", "pentagon",
          "hexagon", "octagon", "star", "heart", "cross", "ring", "crescent"]
PATTERNS = ["stripes", "polka dots", "checkerboard", "grid", "zigzag", "waves", "spiral",
            "concentric rings"]
TEXTURES = ["noise", "speckle", "gradient", "plain"]
BLOBS = "blobs"
SIZES = ["tiny", "small", "medium", "large"]
THICKNESS = ["thin", "thick"]
ORIENTATIONS = ["horizontal", "vertical", "diagonal"]
COUNT_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

ORIENTED = {"stripes", "waves", "zigzag", "grid", "checkerboard", "polka dots"}
LINED = {"stripes", "grid", "zigzag", "waves", "spiral", "concentric rings"}
SIZED_TEXTURES = {"noise", "speckle"}

# Words (or phrases) -> (category, canonical value). Categories: colour, kind, count,
# plural (a count-free plural marker), size, thickness, orientation, bg (marks the
# preceding colour as background), on (background context), with (ends it), filler.
_LEX: dict[tuple[str, ...], tuple[str, str]] = {}


def _add(cat: str, value: str, *words: str) -> None:
    for w in words:
        _LEX[tuple(w.split())] = (cat, value)


for _c in COLOURS:
    _add("colour", _c, _c)
for _w, _c in COLOUR_SYNONYMS.items():
    _add("colour", _c, _w)
_add("colour", "navy", "navy blue")
for _s in SHAPES + PATTERNS + TEXTURES + [BLOBS]:
    _add("kind", _s, _s)
_add("kind", "circle", "disc", "disk", "circular", "round")
_add("kind", "ellipse", "oval", "elliptical")
_add("kind", "rectangle", "rectangular", "oblong")
_add("kind", "triangle", "triangular")
_add("kind", "diamond", "rhombus")
_add("kind", "pentagon", "pentagonal")
_add("kind", "hexagon", "hexagonal")
_add("kind", "octagon", "octagonal")
_add("kind", "star", "star shaped", "starry")
_add("kind", "heart", "heart shaped")
_add("kind", "cross", "plus", "plus sign")
_add("kind", "ring", "annulus", "donut", "doughnut")
_add("kind", BLOBS, "blob", "splotch", "splodge")
_add("kind", "stripes", "stripe", "striped", "stripy", "stripey", "line", "lines", "bar",
     "bars", "banded", "bands")
_add("kind", "polka dots", "polka dot", "polka", "dot", "dots", "dotted", "spot", "spots",
     "spotted", "polka dotted")
_add("kind", "checkerboard", "checkerboards", "checker board", "checker", "checkers",
     "checkered", "chequered", "chequerboard", "checks", "checked")
_add("kind", "grid", "lattice", "mesh", "gridlines", "grid lines")
_add("kind", "zigzag", "zig zag", "zigzags", "chevron", "chevrons")
_add("kind", "waves", "wave", "wavy", "wavy lines", "wavy stripes", "ripples")
_add("kind", "spiral", "spirals", "swirl", "swirls", "swirly")
_add("kind", "concentric rings", "concentric circles", "concentric", "bullseye",
     "bulls eye", "target")
_add("kind", "noise", "noisy", "static")
_add("kind", "speckle", "speckles", "speckled", "specks", "speck", "flecks", "flecked")
_add("kind", "gradient", "gradients")
_add("kind", "plain", "solid", "flat", "uniform", "smooth")
for _i, _w in enumerate(COUNT_WORDS):
    _add("count", str(_i + 1), _w, str(_i + 1))
_add("count", "1", "single", "lone")
_add("count", "2", "pair", "couple")
_add("plural", "", "several", "many", "multiple", "lots", "various", "numerous")
_add("size", "tiny", "tiny", "minuscule", "miniature")
_add("size", "small", "small", "little")
_add("size", "medium", "medium", "mid sized", "medium sized")
_add("size", "large", "large", "big", "huge", "giant", "enormous")
_add("thickness", "thin", "thin", "narrow", "fine", "skinny")
_add("thickness", "thick", "thick", "wide", "broad", "bold", "fat")
_add("orientation", "horizontal", "horizontal", "horizontally")
_add("orientation", "vertical", "vertical", "vertically")
_add("orientation", "diagonal", "diagonal", "diagonally", "slanted", "oblique")
_add("bg", "", "background", "backdrop", "backgrounds")
_add("on", "", "on", "against", "over", "atop")
_add("with", "", "with")
_add("neg", "", "non", "not")
_add("filler", "", "a", "an", "the", "of", "and", "or", "in", "photo", "photograph",
     "picture", "image", "realistic", "pattern", "patterns", "patterned", "texture",
     "textures", "textured", "shape", "shapes", "shaped", "color", "colour", "colors",
     "colours", "colored", "coloured", "some", "lots", "design", "print", "close", "up",
     "closeup", "high", "quality", "drawing", "that", "has", "have", "is", "are", "its",
     "made", "from", "style", "showing", "containing", "featuring", "full", "filled")
_MAX_PHRASE = max(len(k) for k in _LEX)

_CATEGORY = {s: "shape" for s in SHAPES}
_CATEGORY.update({p: "pattern" for p in PATTERNS})
_CATEGORY.update({t: "texture" for t in TEXTURES})
_CATEGORY[BLOBS] = "blobs"


def _lookup(words: tuple[str, ...]) -> tuple[str, str, bool] | None:
    """(category, value, plural) of a phrase, trying plural endings; None if unknown."""
    hit = _LEX.get(words)
    if hit:
        last = words[-1]
        plural = hit[0] == "kind" and last.endswith("s") and not last.endswith(("ss", "us"))
        return hit[0], hit[1], plural
    last = words[-1]
    for cut in ("es", "s"):
        if last.endswith(cut) and len(last) > len(cut) + 2:
            hit = _LEX.get(words[:-1] + (last[: -len(cut)],))
            if hit and hit[0] in ("kind", "colour"):
                return hit[0], hit[1], True
    return None


# --------------------------------------------------------------------------- scenes


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


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


@dataclass(frozen=True)
class _Parsed:
    scene: Scene
    understood: tuple[str, ...]
    ignored: tuple[str, ...]


@lru_cache(maxsize=4096)
def _parse(concept: str) -> _Parsed:
    tokens = re.findall(r"[a-z0-9]+", concept.lower().replace("'", ""))
    # One entry per token or phrase: (text, category, value, plural).
    items: list[tuple[str, str, str, bool]] = []
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _lookup(tuple(tokens[i : i + n]))
            if hit:
                items.append((" ".join(tokens[i : i + n]), *hit))
                i += n
                break
        else:
            items.append((tokens[i], "unknown", "", False))
            i += 1

    understood: list[tuple[str, str]] = []  # (text, slot) so misapplied modifiers can move
    ignored: list[str] = []
    kind = None
    plural = False
    ink: list[str] = []
    bg = None
    count = None
    mods: dict[str, str] = {}
    avoid: list[str] = []
    in_bg = negate = False
    negate_text = ""
    for j, (text, cat, value, is_plural) in enumerate(items):
        nxt = items[j + 1][1] if j + 1 < len(items) else None
        if negate and cat != "colour":
            negate = False
            ignored.append(negate_text)
        if cat == "neg":
            negate, negate_text = True, text
        elif cat == "colour" and negate:
            negate = False
            if value not in avoid:
                avoid.append(value)
            understood.append(("non-" + text, "avoid"))
        elif cat == "on":
            in_bg = True
        elif cat == "with":
            in_bg = False
        elif cat in ("filler", "bg"):
            continue
        elif cat == "unknown":
            ignored.append(text)
        elif cat == "colour":
            if in_bg or nxt == "bg":
                if bg is None or bg == value:
                    bg = value
                    understood.append((text, "bg"))
                else:
                    ignored.append(text)
            elif value in ink:
                understood.append((text, "ink"))
            elif len(ink) < 3:
                ink.append(value)
                understood.append((text, "ink"))
            else:
                ignored.append(text)
        elif cat == "kind":
            if kind is None or kind == value:
                kind = value
                plural = plural or is_plural
                understood.append((text, "kind"))
            else:
                ignored.append(text)
        elif cat == "plural":
            plural = True
            understood.append((text, "plural"))
        elif cat == "count":
            if count is None or count == int(value):
                count = int(value)
                understood.append((text, "count"))
            else:
                ignored.append(text)
        else:  # size, thickness, orientation
            if mods.get(cat, value) == value:
                mods[cat] = value
                understood.append((text, cat))
            else:
                ignored.append(text)

    # Normalise.
    if kind is None and ink:
        kind = BLOBS
        plural = True
    if negate:
        ignored.append(negate_text)
    if kind is None and bg:
        kind, ink, bg = "plain", [bg], None
        understood = [(t, "ink" if s == "bg" else s) for t, s in understood]
    cat = _CATEGORY.get(kind) if kind else None
    drop: set[str] = set()
    if cat is None:
        drop = {"ink", "bg", "avoid", "count", "plural", "size", "thickness", "orientation"}
    else:
        if cat not in ("shape", "blobs"):
            drop |= {"count", "plural"}
        if not (cat == "pattern" or kind in SIZED_TEXTURES or cat in ("shape", "blobs")):
            drop.add("size")
        if kind not in LINED:
            drop.add("thickness")
        if kind not in ORIENTED:
            drop.add("orientation")
    if cat in ("shape", "blobs") and count is None and not plural:
        count = 1
    if kind == "plain":
        colours = ink or ([bg] if bg else [])
        extra = colours[1:]
        ink, bg = colours[:1], None
        drop.add("avoid")
        if extra:  # the unused colours move to ignored
            moved = [t for t, s in understood
                     if s in ("ink", "bg") and (_lookup(tuple(t.split())) or "")[1] in extra]
            understood = [(t, s) for t, s in understood if t not in moved]
            ignored += moved
    elif bg is None and len(ink) >= 2 and (cat not in ("shape", "blobs") or count == 1):
        bg = ink.pop()
    if bg is not None:
        drop.add("avoid")  # only an unspecified background avoids colours
    ignored += [t for t, s in understood if s in drop]
    understood = [(t, s) for t, s in understood if s not in drop]
    scene = Scene(
        kind=kind,
        ink=tuple(ink) if cat else (),
        bg=bg if cat else None,
        avoid=tuple(sorted(avoid)) if "avoid" not in drop else (),
        count=count if cat in ("shape", "blobs") else None,
        size=mods.get("size") if "size" not in drop else None,
        thickness=mods.get("thickness") if "thickness" not in drop else None,
        orientation=mods.get("orientation") if "orientation" not in drop else None,
    )
    return _Parsed(scene, tuple(t for t, _ in understood), tuple(ignored))


# --------------------------------------------------------------------------- randomness


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


def _colour_rgb(name: str, rng: np.random.Generator) -> np.ndarray:
    """The colour's RGB in [0, 1], jittered within its range."""
    r, g, b = (c / 255 for c in COLOURS[name])
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    jh, js, jv = rng.uniform(-1, 1, 3)
    if name in ACHROMATIC:
        v = min(max(v + 0.05 * jv, 0.0), 1.0)
        s = 0.0
    else:
        h = (h + 0.02 * jh) % 1.0
        s = min(max(s * (1 + 0.12 * js), 0.0), 1.0)
        v = min(max(v * (1 + 0.1 * jv), 0.0), 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


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


def _duty(kind: str, scene: Scene, st: _Streams) -> float:
    base = {"stripes": 0.5, "grid": 0.12, "zigzag": 0.45, "waves": 0.45, "spiral": 0.45,
            "concentric rings": 0.5}[kind]
    mult = {"thin": 0.4, "thick": 1.6}.get(scene.thickness or "", None)
    if mult is None:
        mult = st["thickness"].uniform(0.8, 1.2)
    return float(min(base * mult, 0.85))


# --------------------------------------------------------------------------- drawing


def _band(t: np.ndarray, duty: float, period: float) -> np.ndarray:
    """Anti-aliased coverage of the band [0, duty) of a periodic coordinate t (in periods)."""
    g = (t - duty / 2 + 0.5) % 1.0 - 0.5
    return np.clip(period * (duty / 2 - np.abs(g)) + 0.5, 0.0, 1.0)


def _polar_polygon(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of a polygon star-shaped around the origin as sorted (angles, radii)."""
    ang = np.array([math.atan2(y, x) % (2 * math.pi) for x, y in points])
    rad = np.array([math.hypot(x, y) for x, y in points])
    order = np.argsort(ang)
    ang, rad = ang[order], rad[order]
    return np.append(ang, ang[0] + 2 * math.pi), np.append(rad, rad[0])


def _regular(n: int, start: float, radii: list[float] | None = None):
    radii = radii or [1.0]
    return _polar_polygon([
        (radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
         radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ])


_W = 0.32
_POLYGONS = {
    "triangle": _regular(3, -math.pi / 2),
    "square": _regular(4, math.pi / 4),
    "diamond": _polar_polygon([(0.72, 0), (0, 1), (-0.72, 0), (0, -1)]),
    "rectangle": _polar_polygon([(1, 0.55), (-1, 0.55), (-1, -0.55), (1, -0.55)]),
    "pentagon": _regular(5, -math.pi / 2),
    "hexagon": _regular(6, 0.0),
    "octagon": _regular(8, math.pi / 8),
    "star": _regular(10, -math.pi / 2, [1.0, 0.42]),
    "cross": _polar_polygon([(1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W),
                             (-1, _W), (-1, -_W), (-_W, -_W), (-_W, -1), (_W, -1),
                             (_W, -_W)]),
}


def _shape_coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, rot: float):
    """Anti-aliased coverage of `shape` of radius r (pixels), rotated, centred at 0."""
    c, s = math.cos(rot), math.sin(rot)
    x, y = dx * c + dy * s, -dx * s + dy * c  # shape frame
    rho = np.hypot(x, y)
    if shape == "circle":
        return np.clip(r - rho + 0.5, 0, 1)
    if shape == "ellipse":
        q = np.hypot(x, y / 0.6)
        return np.clip((r - q) * 0.8 + 0.5, 0, 1)
    if shape == "ring":
        return np.clip(np.minimum(r - rho, rho - 0.62 * r) + 0.5, 0, 1)
    if shape == "crescent":
        other = np.hypot(x - 0.38 * r, y)
        return np.clip(np.minimum(r - rho, other - 0.82 * r) + 0.5, 0, 1)
    if shape == "heart":
        scale = 0.82 * r  # the curve spans x in [-1.14, 1.14], y in [-1, 1.25]
        u, v = x / scale, -y / scale + 0.12
        a = u * u + v * v - 1
        f = a ** 3 - u * u * v ** 3
        grad = np.hypot(6 * u * a * a - 2 * u * v ** 3, 6 * v * a * a - 3 * u * u * v * v)
        return np.clip(0.5 - f / (grad + 1e-3) * scale, 0, 1)
    ang, rad = _POLYGONS[shape]
    phi = np.arctan2(y, x) % (2 * math.pi)
    phi = np.where(phi < ang[0], phi + 2 * math.pi, phi)  # the wrap-around edge
    k = np.clip(np.searchsorted(ang, phi, side="right") - 1, 0, len(ang) - 2)
    a1, a2, r1, r2 = ang[k], ang[k + 1], rad[k] * r, rad[k + 1] * r
    edge = r1 * r2 * np.sin(a2 - a1) / (r1 * np.sin(phi - a1) + r2 * np.sin(a2 - phi))
    return np.clip(edge - rho + 0.5, 0, 1)


class ProceduralGenerator:
    """Draws concepts of the module's vocabulary; see the module docstring."""

    def __init__(self, size: int = 224):
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.size = int(size)
        ax = np.arange(self.size, dtype=np.float32) + 0.5
        self._x, self._y = np.meshgrid(ax, ax)  # pixel centres; y grows downwards

    # ------------------------------------------------------------------ protocol
    @property
    def id(self) -> str:
        return f"procedural/v{VERSION}/size={self.size}"

    def interpret(self, concept: str) -> Interpretation:
        p = _parse(concept)
        return Interpretation(concept, list(p.understood), list(p.ignored),
                              p.scene.canonical())

    def prompt(self, concept: str, seed: int) -> str:
        return concept

    def drawn(self, concept: str, seed: int) -> str:
        """The scene drawn for `concept` at `seed`, every random choice named: ink and
        background colours, the count of shapes, and the size and orientation where the
        seed's draw lies close to a named one ("red stripes" at seed 3 may be "small
        vertical red stripes on blue background")."""
        scene = _parse(concept).scene
        if scene.kind is None:
            return scene.canonical()
        st = _Streams(seed)
        ink, bg = _colours(scene, st)
        cat = scene.category
        resolved = replace(scene, ink=tuple(ink), avoid=(), bg=None if scene.kind == "plain" else bg)
        if cat in ("shape", "blobs") and scene.count is None:
            resolved = replace(resolved, count=int(st["count"].integers(2, 6)))
        if scene.size is None and (cat in ("shape", "blobs", "pattern") or scene.kind in SIZED_TEXTURES):
            z = _size_z(scene, st)
            name = min(_SIZE_Z, key=lambda n: abs(_SIZE_Z[n] - z))
            resolved = replace(resolved, size=name if abs(_SIZE_Z[name] - z) < 0.08 else None)
        if scene.orientation is None and scene.kind in ORIENTED:
            angle = _angle(scene, st) % math.pi
            named = {"vertical": 0.0, "diagonal": math.pi / 4, "horizontal": math.pi / 2}
            distance = {n: min(abs(angle - a), abs(angle - a - math.pi), abs(angle - a + math.pi), abs(angle - math.pi + a))
                        for n, a in named.items()}
            name = min(distance, key=distance.get)
            resolved = replace(resolved, orientation=name if distance[name] < math.radians(12) else None)
        return resolved.canonical()

    def render(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [self._render_one(_parse(p).scene, s) for p, s in zip(prompts, seeds)]

    def batches(self, prompts: list[str], seeds: list[int]) -> Iterator[list[Image.Image]]:
        """`render` in batches of BATCH_SIZE images (drawn one by one: batches only pace progress)."""
        for start in range(0, len(prompts), BATCH_SIZE):
            yield self.render(prompts[start : start + BATCH_SIZE], seeds[start : start + BATCH_SIZE])

    def ablate(self, prompt: str, concept: str) -> str:
        scene = _parse(prompt).scene
        if scene.kind is None:
            return prompt
        # What the concept names, including its background colour and kind.
        named = _named_attributes(concept)
        changes: dict = {}
        colours = set(named["colour"])
        if colours & (set(scene.ink) | {scene.bg}):
            used = (set(scene.ink) | {scene.bg}) - colours - {None}
            new_ink = []
            for c in scene.ink:
                if c in colours:
                    c = _neutral(used, colours)
                    used.add(c)
                new_ink.append(c)
            changes["ink"] = tuple(dict.fromkeys(new_ink))
            if scene.bg in colours:
                changes["bg"] = _neutral(used | set(new_ink), colours)
            elif scene.bg is None and scene.kind != "plain":
                # Keep the random background the original ink colours allowed.
                changes["avoid"] = tuple(sorted(set(scene.avoid) | (colours & set(scene.ink))))
        if scene.kind in named["kind"]:
            if scene.kind == "plain":
                pass  # a plain fill has nothing to remove but its colour
            elif scene.category == "blobs":
                changes["kind"] = "plain"
            else:
                changes.update(kind=BLOBS, thickness=None, orientation=None,
                               count=scene.count if scene.category == "shape" else None)
        if scene.count is not None and named["count"] and scene.count in named["count"]:
            changes["count"] = 1 if scene.count != 1 else 3
        for attr, opposite in (("size", {"tiny": "large", "small": "large",
                                         "medium": "small", "large": "small"}),
                               ("thickness", {"thin": "thick", "thick": "thin"}),
                               ("orientation", {"horizontal": "vertical",
                                                "vertical": "horizontal",
                                                "diagonal": "horizontal"})):
            value = getattr(scene, attr)
            if value and value in named[attr]:
                changes[attr] = opposite[value]
        if not changes:
            return scene.canonical()
        new = replace(scene, **changes)
        if new.kind == "plain":
            new = replace(new, ink=new.ink[:1], bg=None, avoid=(), count=None, size=None)
        elif new.count == 1 and len(new.ink) > 1 and new.bg is None:
            # One shape shows only the first ink; the others still keep the background.
            new = replace(new, ink=new.ink[:1],
                          avoid=tuple(sorted(set(new.avoid) | set(new.ink[1:]))))
        return new.canonical()

    def vocabulary(self) -> dict[str, list[str]]:
        return {
            "colours": list(COLOURS),
            "shapes": SHAPES + [BLOBS],
            "patterns": list(PATTERNS),
            "textures": list(TEXTURES),
            "sizes": list(SIZES),
            "counts": list(COUNT_WORDS),
            "thickness": list(THICKNESS),
            "orientations": list(ORIENTATIONS),
        }

    def atoms(self) -> list[Atom]:
        """Each colour as a plain fill, each shape, pattern and texture in random colours, and
        each orientation, thickness and size on the pattern it changes most visibly."""
        return (
            [Atom("colours", c, f"plain {c}") for c in COLOURS]
            + [Atom("patterns", p, p) for p in PATTERNS]
            + [Atom("shapes", s, _plural(s)) for s in SHAPES] + [Atom("shapes", BLOBS, BLOBS)]
            + [Atom("textures", t, t) for t in TEXTURES]
            + [Atom("orientations", o, f"{o} stripes") for o in ORIENTATIONS]
            + [Atom("thickness", t, f"{t} stripes") for t in THICKNESS]
            + [Atom("sizes", z, f"{z} polka dots") for z in SIZES]
        )

    # ------------------------------------------------------------------ extras
    def random_concepts(self, count: int, seed: int) -> list[str]:
        """`count` distinct drawable concept phrases (canonical forms), deterministic per seed."""
        rng = np.random.default_rng([int(seed) % (1 << 64), _stable("random_concepts")])
        colours = list(COLOURS)
        out: dict[str, None] = {}
        for _ in range(max(100, 50 * count)):
            if len(out) == count:
                break
            r = rng.random()
            if r < 0.4:
                kind = str(rng.choice(SHAPES))
            elif r < 0.75:
                kind = str(rng.choice(PATTERNS))
            elif r < 0.9:
                kind = str(rng.choice(TEXTURES))
            else:
                kind = BLOBS
            cat = _CATEGORY[kind]
            n_ink = int(rng.choice([0, 1, 1, 1, 2])) if kind != BLOBS else 1
            ink = [str(c) for c in rng.choice(colours, n_ink, replace=False)]
            bg = None
            if rng.random() < 0.35:
                options = [c for c in colours if not any(c in CLASH[i] for i in ink)]
                bg = str(rng.choice(options))
            count_ = None
            if cat in ("shape", "blobs"):
                count_ = int(rng.choice([1, 1, 2, 3, 4, 5])) if rng.random() < 0.7 else None
            size = str(rng.choice(SIZES)) if rng.random() < 0.3 else None
            thick = str(rng.choice(THICKNESS)) if rng.random() < 0.25 else None
            orient = str(rng.choice(ORIENTATIONS)) if rng.random() < 0.4 else None
            words = []
            if count_ is not None:
                words.append(COUNT_WORDS[count_ - 1])
            words += [w for w in (size, thick, orient) if w]
            words.append(" and ".join(ink))
            if kind == "plain":
                words.insert(0, "plain")
            elif cat == "shape":
                words.append(kind if count_ == 1 else _plural(kind))
            else:
                words.append(kind)
            if bg:
                words.append(f"on {bg} background")
            canonical = self.interpret(" ".join(w for w in words if w)).canonical
            if canonical:
                out[canonical] = None
        if len(out) < count:
            raise ValueError(f"could only make {len(out)} distinct concepts, asked {count}")
        return list(out)

    # ------------------------------------------------------------------ drawing
    def _render_one(self, scene: Scene, seed: int) -> Image.Image:
        S = self.size
        st = _Streams(seed)
        if scene.kind is None:  # nothing drawable: a mid-gray canvas
            arr = np.full((S, S, 3), 0.5, np.float32)
            return Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "RGB")
        ink, bg = _colours(scene, st)
        inks = np.stack([_colour_rgb(c, st[f"ink-jitter-{i}"]) for i, c in enumerate(ink)])
        back = _colour_rgb(bg, st["bg-jitter"])
        cat = scene.category
        if cat == "shape" or cat == "blobs":
            canvas = np.empty((S, S, 3), np.float32)
            canvas[:] = back
            if cat == "shape":
                self._shapes(canvas, scene, inks, st)
            else:
                self._blobs(canvas, scene, inks, st)
        elif cat == "pattern":
            cov, idx = self._pattern(scene, st)
            canvas = self._compose(cov, idx, inks, back)
        else:
            canvas = self._texture(scene, inks, back, st)
        return Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")

    @staticmethod
    def _compose(cov, idx, inks, back):
        ink_img = inks[0] if len(inks) == 1 else inks[idx % len(inks)]
        cov = cov[..., None]
        return back * (1 - cov) + ink_img * cov

    def _placements(self, scene: Scene, st: _Streams) -> list[tuple[float, float, float, float]]:
        """(centre x, centre y, radius, rotation) of each shape or blob, in pixels.

        Shapes and blobs share these streams, so a shape and the blob that replaces it in
        an ablation sit in the same place with the same size.
        """
        S = self.size
        n = scene.count or int(st["count"].integers(2, 6))
        g = 1 if n == 1 else (2 if n <= 4 else 3)
        z = _size_z(scene, st)
        base = S * (0.04 + 0.30 * z) / math.sqrt(g)
        cell = S / g
        cells = st["layout"].permutation(g * g)[:n]
        jitter = st["position"].random((9, 2))
        rots = st["rotation"].uniform(0, 2 * math.pi, 9)
        scales = st["size-jitter-each"].uniform(0.9, 1.1, 9)
        out = []
        for i in range(n):
            r = min(base * scales[i], 0.46 * cell)
            if g == 1:
                cx, cy = (S / 2 + (jitter[i] * 2 - 1) * max(S / 2 - r - 2, 0) * 0.6)
            else:
                row, col = divmod(int(cells[i]), g)
                room = max(cell - 2 * r - 2, 0)
                cx = col * cell + 1 + r + jitter[i, 0] * room
                cy = row * cell + 1 + r + jitter[i, 1] * room
            out.append((float(cx), float(cy), float(r), float(rots[i])))
        return out

    def _crop(self, cx: float, cy: float, half: float):
        S = self.size
        x0, x1 = max(int(cx - half - 2), 0), min(int(cx + half + 3), S)
        y0, y1 = max(int(cy - half - 2), 0), min(int(cy + half + 3), S)
        return (slice(y0, y1), slice(x0, x1))

    def _shapes(self, canvas, scene: Scene, inks, st: _Streams) -> None:
        for i, (cx, cy, r, rot) in enumerate(self._placements(scene, st)):
            if scene.kind == "heart":
                rot = (rot / math.pi - 1) * 0.35  # hearts stay roughly upright
            box = self._crop(cx, cy, r)
            dx, dy = self._x[box] - cx, self._y[box] - cy
            cov = _shape_coverage(scene.kind, dx, dy, r, rot)[..., None]
            canvas[box] *= 1 - cov
            canvas[box] += cov * inks[i % len(inks)]

    def _blobs(self, canvas, scene: Scene, inks, st: _Streams) -> None:
        """Metaballs: four Gaussians per blob, thresholded at half height."""
        rng = st["blob-shape"]
        offsets = rng.normal(0, 0.35, (9, 4, 2))
        widths = rng.uniform(0.26, 0.46, (9, 4))
        for i, (cx, cy, r, _) in enumerate(self._placements(scene, st)):
            box = self._crop(cx, cy, 1.5 * r)
            ax_x = self._x[0, box[1]]
            ax_y = self._y[box[0], 0]
            field = np.zeros((len(ax_y), len(ax_x)), np.float32)
            for k in range(4):
                ox, oy = offsets[i, k] * r
                s2 = 2 * (widths[i, k] * r) ** 2
                field += np.outer(np.exp(-((ax_y - cy - oy) ** 2) / s2),
                                  np.exp(-((ax_x - cx - ox) ** 2) / s2))
            cov = np.clip((field - 0.5) * 12 + 0.5, 0, 1)[..., None]
            canvas[box] *= 1 - cov
            canvas[box] += cov * inks[i % len(inks)]

    def _pattern(self, scene: Scene, st: _Streams):
        S = self.size
        kind = scene.kind
        z = _size_z(scene, st)
        period = S * (0.05 + 0.22 * z) * st["frequency"].uniform(0.85, 1.15)
        theta = _angle(scene, st)
        phase = st["phase"].random(2)
        c, s = math.cos(theta), math.sin(theta)
        x = self._x - S / 2
        y = self._y - S / 2
        u = (x * c + y * s) / period + phase[0]
        if kind in ("stripes", "zigzag", "waves"):
            if kind != "stripes":
                v = (-x * s + y * c) / period
                shape = st["wave"].uniform(0, 1, 2)
                wavelength = 1.2 + 1.3 * shape[0]
                amp = 0.35 + 0.5 * shape[1]
                t = v / wavelength + phase[1]
                if kind == "zigzag":
                    u = u + amp * 2 * np.abs(t - np.floor(t + 0.5))
                else:
                    u = u + amp * np.sin(2 * math.pi * t)
            duty = _duty(kind, scene, st)
            return _band(u, duty, period), np.floor(u).astype(np.int64)
        if kind in ("polka dots", "checkerboard", "grid"):
            v = (-x * s + y * c) / period + phase[1]
            if kind == "polka dots":
                row = np.floor(v)
                a = u + 0.5 * (row % 2)
                col = np.round(a)
                dist = np.hypot(a - col, v - row - 0.5) * period
                radius = period * st["thickness"].uniform(0.24, 0.32)
                return np.clip(radius - dist + 0.5, 0, 1), (col + row).astype(np.int64)
            if kind == "checkerboard":
                i, j = np.floor(u), np.floor(v)
                parity = ((i + j) % 2) == 0
                d = np.minimum(0.5 - np.abs(u - i - 0.5), 0.5 - np.abs(v - j - 0.5)) * period
                d = np.minimum(d, 0.5)
                cov = np.where(parity, 0.5 + d, 0.5 - d)
                return cov, np.floor((i - j) / 2).astype(np.int64)
            duty = _duty(kind, scene, st)
            du = np.abs(u - np.round(u))
            dv = np.abs(v - np.round(v))
            d = np.minimum(du, dv) * period
            return np.clip(duty * period / 2 - d + 0.5, 0, 1), np.zeros((S, S), np.int64)
        # spiral, concentric rings: around a jittered centre
        centre = (st["position"].random(2) - 0.5) * S * 0.4
        rho = np.hypot(x - centre[0], y - centre[1]) / period
        duty = _duty(kind, scene, st)
        if kind == "spiral":
            arms = 1 + int(st["wave"].integers(0, 2))
            phi = np.arctan2(y - centre[1], x - centre[0]) / (2 * math.pi)
            t = rho - arms * phi * (1 if phase[1] < 0.5 else -1) + phase[0]
            return _band(t, duty, period), np.floor(t).astype(np.int64)
        t = rho + phase[0]
        return _band(t, duty, period), np.floor(t).astype(np.int64)

    def _texture(self, scene: Scene, inks, back, st: _Streams) -> np.ndarray:
        S = self.size
        kind = scene.kind
        if kind == "plain":
            canvas = np.empty((S, S, 3), np.float32)
            canvas[:] = inks[0]
            return canvas
        stops = np.concatenate([inks, back[None]], axis=0)
        if kind == "speckle":
            z = _size_z(scene, st)
            cell = max(1, int(round(1 + 4 * z)))
            n = -(-S // cell)
            rng = st["layout"]
            density = rng.uniform(0.05, 0.15)
            mask = rng.random((n, n)) < density
            idx = rng.integers(0, len(inks), (n, n))
            mask = np.repeat(np.repeat(mask, cell, 0), cell, 1)[:S, :S]
            idx = np.repeat(np.repeat(idx, cell, 0), cell, 1)[:S, :S]
            return self._compose(mask.astype(np.float32), idx, inks, back)
        if kind == "gradient":
            theta = float(st["angle"].uniform(0, 2 * math.pi))
            x = self._x - S / 2
            y = self._y - S / 2
            t = (x * math.cos(theta) + y * math.sin(theta)) / (S * 0.72) + 0.5
        else:  # noise: bicubic value noise
            z = _size_z(scene, st)
            k = max(3, int(round(S / (3 + 20 * z))))
            field = np.zeros((S, S), np.float32)
            for octave, weight in ((k, 1.0), (min(2 * k, S // 2), 0.5)):
                small = st["layout"].random((octave, octave)).astype(np.float32)
                field += weight * np.asarray(Image.fromarray(small).resize((S, S),
                                                                          Image.BICUBIC))
            lo, hi = np.percentile(field, [2, 98])
            t = (field - lo) / max(hi - lo, 1e-6)
        t = np.clip(t, 0, 1) * (len(stops) - 1)
        i0 = np.minimum(np.floor(t).astype(np.int64), len(stops) - 2)
        w = (t - i0)[..., None]
        return stops[i0] * (1 - w) + stops[i0 + 1] * w


def _neutral(used: set, removed: set) -> str:
    """A neutral colour not in the scene, not clashing with it, and not a removed one."""
    free = [c for c in NEUTRALS if c not in used and c not in removed]
    return next((c for c in free if not any(c in CLASH[u] for u in used)), free[0])


def _named_attributes(concept: str) -> dict[str, list]:
    """Every drawable attribute a concept names, before scene normalisation."""
    out: dict[str, list] = {k: [] for k in ("colour", "kind", "count", "size", "thickness",
                                            "orientation")}
    tokens = re.findall(r"[a-z0-9]+", concept.lower().replace("'", ""))
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _lookup(tuple(tokens[i : i + n]))
            if hit:
                cat, value, _ = hit
                if cat in out:
                    out[cat].append(int(value) if cat == "count" else value)
                i += n
                break
        else:
            i += 1
    return out
