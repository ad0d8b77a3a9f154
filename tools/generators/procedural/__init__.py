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

Slots
-----
A concept's attributes as slots, for code that decomposes and recombines concepts without
re-reading the grammar: `ProceduralGenerator.slots(concept)` gives {slot: canonical
values} (slots in `SLOTS` order: count, size, thickness, orientation, colour, kind,
background, avoid), `compose(slots)` the canonical concept back, `slot_values()` every
value of each slot; `Scene.slots()` is the same for a parsed scene.

Modules
-------
vocabulary  the values of each attribute (colours and their RGB, kinds, sizes, ...), clashes
grammar     the lexicon (words and phrases to values) and the parse of a concept into a Scene
scene       the Scene (its slots and canonical form) and the seeded per-attribute streams
drawing     rasterising a scene at a seed (`Renderer`)
generator   `ProceduralGenerator`, the image-generator protocol over the above
"""

from tools.generators.procedural import vocabulary as _vocabulary
from tools.generators.procedural.generator import BATCH_SIZE, ProceduralGenerator
from tools.generators.procedural.scene import SLOTS, VERSION, Scene
from tools.generators.procedural.vocabulary import *  # noqa: F403  (the values of each attribute, as vocabulary.__all__ lists them)

__all__ = ["BATCH_SIZE", "SLOTS", "VERSION", "ProceduralGenerator", "Scene", *_vocabulary.__all__]
