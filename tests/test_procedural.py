"""The procedural generator: parsing, determinism, and that images show what the words say."""

from __future__ import annotations

import colorsys
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.generators.base import ImageGenerator
from tools.generators.procedural import ProceduralGenerator

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96  # small images keep the tests fast; the drawing code is size-independent


@pytest.fixture(scope="module")
def gen() -> ProceduralGenerator:
    return ProceduralGenerator(size=SIZE)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255


def near(a: np.ndarray, rgb: tuple[int, int, int], tol: float = 0.2) -> np.ndarray:
    """Mask of pixels within `tol` (per channel, 0-1 scale) of a colour."""
    return (np.abs(a - np.array(rgb, np.float32) / 255) < tol).all(axis=-1)


def red_fraction(a: np.ndarray) -> float:
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return float(((r > 0.6) & (g < 0.35) & (b < 0.35)).mean())


# --------------------------------------------------------------------------- protocol


def test_follows_protocol_and_id(gen):
    assert isinstance(gen, ImageGenerator)
    assert gen.id == f"procedural/v1/size={SIZE}"
    assert ProceduralGenerator().id.endswith("size=224")
    assert gen.prompt("red stripes", 7) == "red stripes"


def test_vocabulary_categories_are_parsed_back(gen):
    vocab = gen.vocabulary()
    for cat in ("colours", "shapes", "patterns", "textures", "sizes", "counts"):
        assert vocab[cat], cat
    assert {"red", "blue", "gray", "white", "black"} <= set(vocab["colours"])
    assert {"circle", "star", "triangle", "square"} <= set(vocab["shapes"])
    assert {"stripes", "polka dots", "checkerboard"} <= set(vocab["patterns"])
    for cat in ("shapes", "patterns", "textures", "colours"):
        for word in vocab[cat]:
            interp = gen.interpret(word)
            assert interp.drawable and not interp.ignored, (word, interp)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("a, b", [
    ("red polka dots", "red spots"),
    ("red polka dots", "polka dots, red"),
    ("red polka dots", "A photo of red polka-dots."),
    ("stripes", "striped pattern"),
    ("checkerboard", "checkered"),
    ("checkerboard", "checkers"),
    ("grey noise", "gray noise"),
    ("a red circle", "one red circle"),
    ("a red circle", "red disc"),
    ("three yellow stars on a blue background", "3 yellow stars on blue"),
    ("three yellow stars on a blue background", "blue background with three yellow stars"),
    ("black and white stripes", "black stripes on a white background"),
    ("red", "red blobs"),
    ("blue background", "plain blue"),
    ("large red circle", "a big red circle"),
])
def test_paraphrases_share_canonical(gen, a, b):
    ca, cb = gen.interpret(a).canonical, gen.interpret(b).canonical
    assert ca and ca == cb


@pytest.mark.parametrize("a, b", [
    ("red polka dots", "blue polka dots"),
    ("red polka dots", "red stripes"),
    ("horizontal stripes", "vertical stripes"),
    ("three stars", "two stars"),
    ("a star", "stars"),
    ("small circle", "large circle"),
    ("red circle on blue", "blue circle on red"),
    ("black and white stripes", "white and black stripes"),
])
def test_different_scenes_differ(gen, a, b):
    assert gen.interpret(a).canonical != gen.interpret(b).canonical


def test_canonical_is_a_fixed_point(gen):
    for c in ["three yellow stars on a blue background", "thin diagonal green stripes",
              "red", "blue background", "black and white noise", "tiny hearts"]:
        canonical = gen.interpret(c).canonical
        assert gen.interpret(canonical).canonical == canonical


def test_ignored_and_understood_words(gen):
    i = gen.interpret("red dog")
    assert i.understood == ["red"] and i.ignored == ["dog"] and i.canonical == "red blobs"
    i = gen.interpret("a photo of a realistic horizontal circle")
    assert i.ignored == ["horizontal"]  # orientation does not apply to a circle
    assert "a" not in i.ignored and "photo" not in i.ignored
    i = gen.interpret("red circles on blue and green")
    assert i.ignored == ["green"]  # a second background colour
    i = gen.interpret("stripes and circles")
    assert i.ignored == ["circles"]  # a second kind


@pytest.mark.parametrize("concept", ["golden retriever", "a photo of a dog", "", "horizontal",
                                     "!!!"])
def test_undrawable_concept_has_empty_canonical(gen, concept):
    i = gen.interpret(concept)
    assert i.canonical == "" and not i.drawable
    assert not i.understood


# --------------------------------------------------------------------------- rendering


def test_size_mode_and_determinism(gen):
    prompts = ["three yellow stars on a blue background", "red polka dots", "noise",
               "thin diagonal green stripes", "red", "spiral", "golden retriever"]
    a = gen.render(prompts, [5] * len(prompts))
    b = ProceduralGenerator(size=SIZE).render(prompts, [5] * len(prompts))
    c = gen.render(prompts, [6] * len(prompts))
    for p, x, y, z in zip(prompts, a, b, c):
        assert x.mode == "RGB" and x.size == (SIZE, SIZE)
        assert np.array_equal(np.asarray(x), np.asarray(y)), p
        if p != "golden retriever":
            assert not np.array_equal(np.asarray(x), np.asarray(z)), p
    # Paraphrases with the same canonical form give the same pixels.
    x, y = gen.render(["red spots", "polka dots, red"], [3, 3])
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_render_is_stable_across_processes():
    """Seeds come from a stable hash, not Python's salted hash()."""
    code = (
        "import hashlib, numpy as np\n"
        "from tools.generators.procedural import ProceduralGenerator\n"
        f"ims = ProceduralGenerator({SIZE}).render(['red stripes', 'stars'], [1, 2])\n"
        "print(hashlib.sha256(b''.join(np.asarray(i).tobytes() for i in ims)).hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
                       check=True).stdout.strip()
        for seed in ("1", "2")
    }
    ims = ProceduralGenerator(SIZE).render(["red stripes", "stars"], [1, 2])
    here = hashlib.sha256(b"".join(np.asarray(i).tobytes() for i in ims)).hexdigest()
    assert digests == {here}


def test_render_checks_lengths(gen):
    with pytest.raises(ValueError):
        gen.render(["red"], [1, 2])


def mean_hue_share(images: list[Image.Image], lo: float, hi: float) -> float:
    """Fraction of saturated pixels whose hue lies in [lo, hi) (hue in 0-1)."""
    total = 0.0
    for im in images:
        a = arr(im).reshape(-1, 3)
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in a[::7]])
        sat = hsv[:, 1] > 0.5
        total += float((sat & (hsv[:, 0] >= lo) & (hsv[:, 0] < hi)).mean())
    return total / len(images)


def test_colour_words_are_rendered(gen):
    seeds = list(range(6))
    red = gen.render(["red"] * 6, seeds)
    blue = gen.render(["blue"] * 6, seeds)
    assert np.mean([red_fraction(arr(i)) for i in red]) > 0.08
    assert np.mean([red_fraction(arr(i)) for i in blue]) < 0.01
    # Blue hue (about 0.6) dominates the blue images' coloured pixels, not the red ones'.
    assert mean_hue_share(blue, 0.55, 0.70) > mean_hue_share(red, 0.55, 0.70) + 0.05
    # An explicit background is painted: corners of "red circle on white" are white.
    for im in gen.render(["a small red circle on a white background"] * 4, seeds[:4]):
        a = arr(im)
        assert near(a[[0, 0, -1, -1], [0, -1, 0, -1]], (245, 245, 245), 0.1).all()
        assert red_fraction(a) > 0.01


def test_stripe_orientation_is_visible(gen):
    for seed in range(4):
        (h,) = gen.render(["black and white horizontal stripes"], [seed])
        (v,) = gen.render(["black and white vertical stripes"], [seed])
        h, v = arr(h).mean(-1), arr(v).mean(-1)
        # Horizontal stripes are (nearly) constant along each row, vary down the columns.
        assert 3 * h.std(axis=1).mean() < h.std(axis=0).mean()
        assert 3 * v.std(axis=0).mean() < v.std(axis=1).mean()


def test_count_of_shapes(gen):
    from scipy import ndimage

    for n, word in [(1, "one"), (3, "three"), (5, "five")]:
        for seed in range(3):
            (im,) = gen.render([f"{word} small red squares on white"], [seed])
            labels, found = ndimage.label(red_fraction_mask(arr(im)))
            assert found == n, (word, seed, found)


def red_fraction_mask(a: np.ndarray) -> np.ndarray:
    return (a[..., 0] > 0.6) & (a[..., 1] < 0.35) & (a[..., 2] < 0.35)


def test_sizes_are_ordered(gen):
    seeds = list(range(4))
    area = {s: np.mean([red_fraction(arr(i)) for i in gen.render([f"{s} red circle on white"] * 4,
                                                                  seeds)])
            for s in ("tiny", "small", "large")}
    assert area["tiny"] < area["small"] < area["large"]


def test_unspecified_background_does_not_clash(gen):
    for seed in range(20):
        (im,) = gen.render(["small red circle"], [seed])
        a = arr(im)
        corners = a[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert red_fraction_mask(corners[None]).sum() == 0
        assert np.ptp(corners, axis=0).max() < 0.05  # one uniform background colour


def test_patterns_and_textures_look_different(gen):
    """Crude structure statistics separate the kinds."""
    (plain,) = gen.render(["plain blue"], [0])
    (noise,) = gen.render(["black and white noise"], [0])
    (dots,) = gen.render(["red polka dots on white"], [0])
    assert arr(plain).reshape(-1, 3).std(axis=0).max() < 0.01
    assert arr(noise).mean(-1).std() > 0.15
    frac = red_fraction(arr(dots))
    assert 0.05 < frac < 0.6  # dots cover part, not all, of the canvas


# --------------------------------------------------------------------------- ablation


def test_ablate_rewrites_the_scene(gen):
    assert gen.ablate("red polka dots", "polka dots") == "red blobs"
    assert gen.ablate("red polka dots", "red") == "gray polka dots on non-red background"
    assert gen.ablate("red spots", "spots") == gen.interpret("red").canonical
    assert gen.ablate("three yellow stars on a blue background", "blue") == \
        "three yellow stars on gray background"
    assert gen.ablate("three yellow stars on a blue background", "stars") == \
        "three yellow blobs on blue background"
    assert gen.ablate("horizontal stripes", "horizontal") == "vertical stripes"
    assert gen.ablate("gray circle", "gray") != gen.interpret("gray circle").canonical
    # A concept not in the scene changes nothing.
    assert gen.ablate("large red circle", "dog") == gen.interpret("large red circle").canonical


def test_ablating_a_colour_keeps_the_layout(gen):
    prompt = "three red circles on a white background"
    counter = gen.ablate(prompt, "red")
    for seed in range(4):
        a, b = (arr(i) for i in gen.render([prompt, counter], [seed, seed]))
        assert red_fraction(a) > 0.02 and red_fraction(b) == 0
        # Same shapes in the same places: the non-background masks agree.
        mask_a = ~near(a, (245, 245, 245), 0.12)
        mask_b = ~near(b, (245, 245, 245), 0.12)
        assert (mask_a ^ mask_b).mean() < 0.01
        assert mask_a.mean() > 0.02


def test_ablating_a_pattern_keeps_colour_and_the_rest(gen):
    prompt = "black and white horizontal stripes"
    counter = gen.ablate(prompt, "horizontal")
    for seed in range(3):
        a, b = (arr(i).mean(-1) for i in gen.render([prompt, counter], [seed, seed]))
        assert 3 * a.std(axis=1).mean() < a.std(axis=0).mean()
        assert 3 * b.std(axis=0).mean() < b.std(axis=1).mean()  # now vertical
        assert abs(a.mean() - b.mean()) < 0.08  # same duty cycle and colours
    for seed in range(3):
        a, b = gen.render(["red polka dots on white", gen.ablate("red polka dots on white",
                                                                 "polka dots")], [seed, seed])
        assert red_fraction(arr(b)) > 0.02  # the colour stays
        assert not np.array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- control set


def test_random_concepts(gen):
    concepts = gen.random_concepts(40, seed=3)
    assert len(concepts) == 40 == len(set(concepts))
    assert concepts == gen.random_concepts(40, seed=3)
    assert concepts != gen.random_concepts(40, seed=4)
    canon = [gen.interpret(c) for c in concepts]
    assert all(i.drawable and not i.ignored for i in canon)
    assert len({i.canonical for i in canon}) == 40
    kinds = set()
    vocab = gen.vocabulary()
    for c in concepts:
        for cat in ("shapes", "patterns", "textures"):
            if any(w in c for w in vocab[cat]):
                kinds.add(cat)
    assert kinds == {"shapes", "patterns", "textures"}


def test_ablating_an_ink_colour_keeps_a_random_background(gen):
    """The unspecified background must not jump when the ink colour is neutralised."""
    prompt = "three red circles"
    counter = gen.ablate(prompt, "red")
    assert counter == "three gray circles on non-red background"
    for seed in range(25):
        a, b = (np.asarray(i) for i in gen.render([prompt, counter], [seed, seed]))
        corners = ([0, 0, -1, -1], [0, -1, 0, -1])
        assert np.array_equal(a[corners], b[corners]), seed


def test_non_colour_background(gen):
    i = gen.interpret("circles on a non-red, not blue background")
    assert i.canonical == "circles on non-blue non-red background" and not i.ignored
    assert gen.interpret("stripes on white non-red").ignored == ["non-red"]  # bg is given
    for seed in range(20):
        (im,) = gen.render(["small yellow circle on non-blue non-white background"], [seed])
        corner = np.asarray(im)[0, 0] / 255
        assert not near(corner[None], (30, 70, 220), 0.25).any()
        assert not near(corner[None], (245, 245, 245), 0.1).any()


def test_ablations_are_canonical_scenes(gen):
    """Every ablation is itself a canonical, drawable scene (so it renders as described)."""
    for concept in gen.random_concepts(60, seed=11):
        interp = gen.interpret(concept)
        assert gen.interpret(interp.canonical).canonical == interp.canonical
        for word in interp.understood + ["red", "white", "stripes", "one", "large", "thin"]:
            out = gen.ablate(concept, word)
            assert out and gen.interpret(out).canonical == out, (concept, word, out)
    assert gen.ablate("three pink and yellow squares", "three") == \
        "one pink square on non-yellow background"


def test_drawn_names_what_the_seed_chose_and_draws_the_same_image():
    import numpy as np

    generator = ProceduralGenerator(64)
    for seed in range(6):
        drawn = generator.drawn("stripes", seed)
        scene = generator.interpret(drawn)
        assert scene.canonical == drawn and not scene.ignored and "on" in drawn.split()
        # with the orientation and size it reads off the seed left out, the drawn words name
        # the same colours, so the image is the very same
        words = [w for w in drawn.split() if w not in ("horizontal", "vertical", "diagonal", "tiny", "small",
                                                        "medium", "large")]
        same = generator.render([" ".join(words)], [seed])[0]
        assert np.array_equal(np.asarray(same), np.asarray(generator.render(["stripes"], [seed])[0]))
    assert generator.drawn("three red stars on blue", 0) == "three red stars on blue background"
    assert generator.drawn("giraffe", 0) == ""


def test_slots_read_a_concept_and_compose_writes_it_back(gen):
    """Operators read concepts as slots through the generator, not through its grammar."""
    assert gen.slots("three crimson discs on navy blue background") == {
        "count": ["three"], "colour": ["red"], "kind": ["circle"], "background": ["navy"]}
    assert gen.slots("red") == {"colour": ["red"]}  # the kind the grammar fills in is not stated
    assert gen.slots("golden retriever") == {}
    assert gen.slots("gray circles on non-red background")["avoid"] == ["red"]
    assert gen.compose({"size": ["small"], "colour": ["red"], "kind": ["polka dots"], "background": ["blue"]}) == \
        "small red polka dots on blue background"
    assert gen.compose({"count": ["one"], "colour": ["green"], "kind": ["cross"]}) == "one green cross"
    values = gen.slot_values()
    assert set(values) == {"count", "size", "thickness", "orientation", "colour", "kind", "background", "avoid"}
    concepts = [a.concept for a in gen.atoms()] + gen.random_concepts(40, seed=1) + [
        "black and white stripes", "blue background", "red circles on non-blue background", "a red circle"]
    for concept in concepts:
        slots = gen.slots(concept)
        assert all(v in values[slot] for slot, vs in slots.items() for v in vs), concept
        assert gen.compose(slots) == gen.interpret(concept).canonical, concept
