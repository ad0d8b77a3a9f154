"""`ProceduralGenerator`: the image-generator protocol (`tools.generators.base`) over the
grammar, the scene and the renderer of this package."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from tools.generators.base import Atom, Interpretation
from tools.generators.procedural.drawing import Renderer
from tools.generators.procedural.grammar import _named_attributes, _parse
from tools.generators.procedural.scene import VERSION, _SIZE_Z, _angle, _colours, _size_z, _stable, _Streams
from tools.generators.procedural.vocabulary import (
    BLOBS,
    CLASH,
    COLOURS,
    COUNT_WORDS,
    NEUTRALS,
    ORIENTATIONS,
    ORIENTED,
    PATTERNS,
    SHAPES,
    SIZED_TEXTURES,
    SIZES,
    TEXTURES,
    THICKNESS,
    _CATEGORY,
    _plural,
)

BATCH_SIZE = 64  # images per batch of `batches` (progress steps)
_SHOWS = {  # what each kind's drawing shows under other words (ProceduralGenerator.contains)
    "grid": ("stripes", "lines"),
    "checkerboard": ("grid", "squares", "edges"),
    "zigzag": ("stripes",),
    "waves": ("stripes",),
    "polka dots": ("dots", "circles", "blobs"),
    "blobs": ("dots", "circles"),
    "circle": ("dots",),
    "ring": ("circles",),
    "concentric rings": ("rings", "circles"),
    "speckle": ("dots", "noise"),
    "noise": ("speckle",),
}


class ProceduralGenerator:
    """Draws concepts of the package's vocabulary; see the package docstring."""

    def __init__(self, size: int = 224):
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.size = int(size)
        self._renderer = Renderer(self.size)

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

    def contains(self, scene: str) -> list[str]:
        """What a drawing of `scene` shows beyond its own words, as the renderer draws it
        (drawing.py): a grid's lines are stripes; a checkerboard's edges make a grid of
        squares; zigzags and waves are bent stripes; dots, blobs and rings are round; speckle
        is scattered dots; a gradient or noise passes through the colours between its ends
        ("black and white gradient" shows gray)."""
        parsed = _parse(scene).scene
        shown = list(_SHOWS.get(parsed.kind, ()))
        if parsed.kind in ("gradient", "noise"):
            stops = [c for c in (*parsed.ink, parsed.bg) if c in COLOURS]
            for a, b in zip(stops, stops[1:]):
                middle = [(x + y) / 2 for x, y in zip(COLOURS[a], COLOURS[b])]
                nearest = min(COLOURS, key=lambda n: sum((u - v) ** 2 for u, v in zip(COLOURS[n], middle)))
                if nearest not in (a, b):
                    shown.append(nearest)
        return list(dict.fromkeys(shown))

    def render(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [self._renderer.draw(_parse(p).scene, s) for p, s in zip(prompts, seeds)]

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

    def sweep_vocabulary(self) -> list[str]:
        """Everything this generator can say, up to three attributes deep: colours, patterns,
        shapes and textures alone, colour x pattern or shape, orientation and size x pattern,
        colour x orientation x stripes, colour x size x polka dots, black and white x pattern
        or texture (and its sizes x pattern), then the atoms; one concept per canonical scene
        (same scene, same images). The layer-wide sweep scores them once for every unit."""
        colours, shapes = list(COLOURS), [_plural(s) for s in SHAPES]
        kinds = list(PATTERNS) + shapes + [BLOBS]
        orientations, sizes = ("horizontal", "vertical", "diagonal"), ("small", "large")
        candidates = itertools.chain(
            colours, [f"plain {c}" for c in colours], kinds, TEXTURES,
            (f"{c} {k}" for c in colours for k in kinds),
            (f"{o} {p}" for o in orientations for p in PATTERNS),
            (f"{z} {p}" for z in sizes for p in PATTERNS),
            (f"{c} {o} stripes" for c in colours for o in orientations),
            (f"{z} {c} polka dots" for c in colours for z in sizes),
            (f"black and white {k}" for k in [*kinds, *TEXTURES]),
            (f"{z} black and white {p}" for z in sizes for p in PATTERNS),
            (a.concept for a in self.atoms()),
        )
        by_scene: dict[str, str] = {}
        for concept in candidates:
            scene = self.interpret(concept).canonical
            if scene and scene not in by_scene:
                by_scene[scene] = concept
        return list(by_scene.values())

    # ------------------------------------------------------------------ slots
    def slots(self, concept: str) -> dict[str, list[str]]:
        """The attribute values `concept` fixes, by slot (`SLOTS` order: count, size,
        thickness, orientation, colour, kind, background, avoid), as the grammar reads it:
        synonyms and plurals become canonical values ("three crimson discs on navy blue" ->
        {"count": ["three"], "colour": ["red"], "kind": ["circle"], "background": ["navy"]}),
        words it cannot draw or that do not apply are left out, and so is the kind the
        grammar fills in (colours alone draw blobs: "red" -> {"colour": ["red"]}).
        `compose(slots(c))` draws what `c` draws."""
        parsed = _parse(concept)
        slots = parsed.scene.slots()
        if parsed.kind_implied:
            slots.pop("kind", None)
        return slots

    def compose(self, slots: Mapping[str, Sequence[str]]) -> str:
        """The canonical concept holding `slots` (keys of `SLOTS`, values as `slots` gives
        them; missing or empty slots are left to the seed): {"size": ["small"], "colour":
        ["red"], "kind": ["polka dots"], "background": ["blue"]} -> "small red polka dots
        on blue background". Read by the grammar, so its rules apply (one kind, at most
        three ink colours, modifiers only where they apply); "" when nothing is drawable."""
        words = [str(v) for slot in ("count", "size", "thickness", "orientation") for v in slots.get(slot, ())]
        words.append(" and ".join(str(v) for v in slots.get("colour", ())))
        for kind in slots.get("kind", ())[:1]:
            one = [str(v) for v in slots.get("count", ())][:1] in (["one"], ["1"])
            words.append(_plural(kind) if _CATEGORY.get(kind) == "shape" and not one else kind)
        if slots.get("background"):
            words.append(f"on {slots['background'][0]} background")
        elif slots.get("avoid"):
            words.append("on " + " ".join(f"non {c}" for c in slots["avoid"]) + " background")
        return _parse(" ".join(w for w in words if w)).scene.canonical()

    def slot_values(self) -> dict[str, list[str]]:
        """Every value each slot of `SLOTS` can hold, by slot; kinds list patterns, then
        shapes and blobs, then textures (operators and probes spread their picks over it)."""
        return {
            "count": list(COUNT_WORDS),
            "size": list(SIZES),
            "thickness": list(THICKNESS),
            "orientation": list(ORIENTATIONS),
            "colour": list(COLOURS),
            "kind": PATTERNS + SHAPES + [BLOBS] + TEXTURES,
            "background": list(COLOURS),
            "avoid": list(COLOURS),
        }

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


def _neutral(used: set, removed: set) -> str:
    """A neutral colour not in the scene, not clashing with it, and not a removed one."""
    free = [c for c in NEUTRALS if c not in used and c not in removed]
    return next((c for c in free if not any(c in CLASH[u] for u in used)), free[0])
