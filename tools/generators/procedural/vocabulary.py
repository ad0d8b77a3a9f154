"""What the procedural generator can draw: the values of each attribute of a scene (colours
with their RGB, shapes, patterns, textures, counts, sizes, thickness, orientations), which
kinds each modifier applies to, and which colours clash. The words that name them
(synonyms, plurals, filler) are the grammar's (`grammar.py`)."""

from __future__ import annotations

__all__ = [  # what the package re-exports
    "ACHROMATIC",
    "BLOBS",
    "CLASH",
    "COLOUR_SYNONYMS",
    "COLOURS",
    "COUNT_WORDS",
    "LINED",
    "NEUTRALS",
    "ORIENTATIONS",
    "ORIENTED",
    "PATTERNS",
    "SHAPES",
    "SIZED_TEXTURES",
    "SIZES",
    "TEXTURES",
    "THICKNESS",
]

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

_CATEGORY = {s: "shape" for s in SHAPES}
_CATEGORY.update({p: "pattern" for p in PATTERNS})
_CATEGORY.update({t: "texture" for t in TEXTURES})
_CATEGORY[BLOBS] = "blobs"


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")
