"""The protocol every image generator follows: concept prompts + seeds -> images; and the
optional one of closed-vocabulary generators that read concepts as attribute slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class Interpretation:
    """What a generator understood of a concept.

    `canonical` is a normal form of the scene: two concepts with the same canonical form
    render the same images. It is None for open-vocabulary generators (diffusers), which
    have no such form, and "" when nothing of the concept could be drawn.
    """

    concept: str
    understood: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    canonical: str | None = None

    @property
    def drawable(self) -> bool:
        return self.canonical != ""


@dataclass(frozen=True)
class Atom:
    """One attribute value alone, as a concept the generator draws: the layer-wide sweep
    scores every atom once, and operators recombine the best ones attribute by attribute.
    `category` is a key of `vocabulary()` ("colours", "patterns", ...), or "concepts" for
    open-vocabulary generators, whose atoms are whole concepts."""

    category: str
    value: str
    concept: str


@runtime_checkable
class ImageGenerator(Protocol):
    """Renders concepts as images, deterministically per (prompt, seed)."""

    @property
    def id(self) -> str:
        """Name and every setting that changes the pixels; part of each image's cache key."""

    def interpret(self, concept: str) -> Interpretation:
        """What of `concept` this generator can draw."""

    def prompt(self, concept: str, seed: int) -> str:
        """The exact text rendered for `concept` at `seed` (e.g. LINE's photo template)."""

    def render(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One RGB image per (prompt, seed) pair, in order."""

    def batches(self, prompts: list[str], seeds: list[int]) -> Iterator[list[Image.Image]]:
        """The images of `render`, in order, one batch at a time (a diffusion pipeline's
        batch): the engine caches each batch and reports progress as it comes."""

    def drawn(self, concept: str, seed: int) -> str:
        """What was drawn for `concept` at `seed`, with the choices the generator made
        itself named (colours, sizes, orientations left open); the concept where it cannot
        tell. Operators read the units' favourite images through it."""

    def ablate(self, prompt: str, concept: str) -> str:
        """The prompt of the same scene with `concept` removed or replaced.

        Rendered at the same seed as `prompt`, it gives the counterfactual image.
        """

    def vocabulary(self) -> dict[str, list[str]]:
        """Words this generator draws, by category; empty for open-vocabulary generators."""

    def atoms(self) -> list[Atom]:
        """The layer-wide sweep's concepts: each attribute value alone (or, for open
        vocabularies, a list of common concepts)."""


def sweep_vocabulary(generator: ImageGenerator) -> list[str]:
    """The concepts a layer-wide sweep scores once for every unit: the generator's
    `sweep_vocabulary()` where it has one (all it can say, a few attributes deep), else its
    atoms' concepts (an open vocabulary's list of common concepts)."""
    offered = getattr(generator, "sweep_vocabulary", None)
    concepts = offered() if callable(offered) else [a.concept for a in generator.atoms()]
    return list(dict.fromkeys(concepts))


def contains(generator: ImageGenerator, scene: str) -> list[str]:
    """Words for what a drawing of `scene` (as `drawn` names it) shows beyond its own words,
    from the generator's `contains()` where it has one (the procedural one: a grid's lines are
    stripes), else none. A contrast image for "X without stripes" must not show stripes under
    another name."""
    offered = getattr(generator, "contains", None)
    return list(offered(scene)) if callable(offered) else []


@runtime_checkable
class SlotReader(Protocol):
    """A generator that reads its concepts as attribute slots (the procedural one: count,
    size, thickness, orientation, colour, kind, background, avoid). Operators decompose and
    recombine concepts through it instead of re-reading the generator's grammar;
    open-vocabulary generators (diffusion) have no slots and do not follow it."""

    def slots(self, concept: str) -> dict[str, list[str]]:
        """The attribute values `concept` fixes, by slot, as canonical values; what the
        generator cannot draw is left out, and so is what it fills in itself."""

    def compose(self, slots: Mapping[str, Sequence[str]]) -> str:
        """The canonical concept holding `slots` ("" when nothing of it is drawable)."""

    def slot_values(self) -> dict[str, list[str]]:
        """Every value each slot can hold, by slot, slots in the order of a concept's words."""


def slot_reader(generator: object) -> SlotReader | None:
    """`generator` where it reads concepts as slots (with at least one slot), else None."""
    if isinstance(generator, SlotReader) and generator.slot_values():
        return generator
    return None
