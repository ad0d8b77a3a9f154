"""The procedural generator's grammar: the words (and phrases) it reads, each mapped to a
category and a canonical value (the lexicon), and the parse of a concept into a normalised
`Scene` with the words it understood and those it ignored. The rules are documented in the
package's docstring (`tools/generators/procedural/__init__.py`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tools.generators.procedural.scene import Scene
from tools.generators.procedural.vocabulary import (
    BLOBS,
    _CATEGORY,
    COLOUR_SYNONYMS,
    COLOURS,
    COUNT_WORDS,
    LINED,
    ORIENTED,
    PATTERNS,
    SHAPES,
    SIZED_TEXTURES,
    TEXTURES,
)

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


@dataclass(frozen=True)
class _Parsed:
    scene: Scene
    understood: tuple[str, ...]
    ignored: tuple[str, ...]
    kind_implied: bool = False  # the kind is the grammar's default (colours alone draw blobs)


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
    kind_implied = kind is None and bool(ink)
    if kind_implied:
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
    return _Parsed(scene, tuple(t for t, _ in understood), tuple(ignored), kind_implied)


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
