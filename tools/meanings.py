"""Meanings from evidence: when two groups of concepts are distinct reasons for a unit to fire.

Words are no evidence: MiniLM puts "plain gray" and "gray hearts" far apart, yet a unit that
fires on both may respond to one thing, the gray. Two concepts count as distinct meanings
only when each still drives the unit where the other's attributes are absent, shown on
fresh images (seeds the loop never used):

1. Candidates: every concept the history (or the unit's vocabulary sweep) scored at AUC >=
   `threshold` on its own images, the label's finalists among them; one per scene (the
   generator's canonical form); simplest first (fewest words), then by AUC, spread so that
   each pick shares no word with the earlier ones while it can (`candidates`). A meaning's
   name is its simplest concept.
2. The first candidate that its fresh images confirm (`confirmed`) opens the first meaning.
3. Each later candidate C is compared with each meaning M so far, both ways: C with M's
   attributes removed (`generator.ablate`, the counterfactual the `ablate_concept` tool
   draws), on fresh seeds, keeping only the images whose drawn scene shows none of M's
   attribute words (a contrast image: "vertical stripes" drawn orange by chance says nothing
   against an orange unit), counting what the drawing shows under other words (a grid's
   lines are stripes: `shown_words`); and M without C's attributes, the same way. When both still drive
   the unit, C is distinct from M. C joins the first meaning it is not distinct from; when it
   is distinct from all, it opens a new meaning, its evidence the images that showed it.
4. A meaning must drive the unit at least `MIN_RELATIVE` as hard as the strongest one (mean
   fresh activation above the control's mean): a shape that half-fires a blob detector is
   not a second meaning; it is listed among the unconfirmed with its strength. Shared unnamed
   drivers count too: when every firing image of both tests shows one attribute the generator
   chose itself (a random colour), they are the same.
5. The unit is polysemantic when two or more meanings are confirmed.

"Drives the unit" (`Analyst.drives`): at least `min_images` fresh images, AUC >= `threshold`,
the AUC's bootstrap interval (tools.verdict) above `min_auc_low`, p <= `max_p` against the
control set, and a mean activation above the control's mean at least `MIN_RELATIVE` of the
label's own fresh images' (the reference); where natural photos are at hand
(tools.verdict.natural_photos), an AUC against them of at least the verdict's bar (0.8): a
meaning explains the unit in its own right, as a label must. One lucky image among a few cannot pass: the
interval's low end falls to chance. Nor can images that outrank a silent control set while
leaving the unit all but cold: an AND unit (yellow and diagonal stripes, dev unit 8) that gives
0.05 to gradients and 1.0 to its label ranks those gradients above 96% of a control set where
it gives ~0, yet they do not drive it (AUC ignores magnitude: NeuronEval's point).

The unit's activations come through `Probe` (tools.engine.Engine satisfies it); everything
else is pure. Results are pydantic models (JSON as is) and keep every test's evidence.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np

from tools.generators.base import contains
from tools.polysemantic import Comparison, Group, Meaning, Polysemanticity, Test, best_scores
from tools.text import singular
from tools.verdict import Bar, Evidence, auc, evidence, natural_photos

if TYPE_CHECKING:
    from tools.history import Step

MEANING_SEED = 1_000  # the confirm step's fresh seeds: a finalist's fresh images are reused from the cache
IMAGES = 4  # fresh images per test
EXTRA = 4  # more seeds to draw from when contrast images drop some
MAX_CANDIDATES = 6
MAX_MEANINGS = 3
MIN_RELATIVE = 0.5  # a test's images drive the unit at least half as hard (mean above control) as the label's
_FUNCTION_WORDS = {"a", "an", "the", "on", "of", "and", "with", "background", "in", "some"}


class Probe(Protocol):
    """What the analysis needs of the scoring engine."""

    generator: object

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list, int]: ...

    def image_activations(self, refs: Sequence) -> np.ndarray: ...

    def control_activations(self) -> np.ndarray: ...


def content_words(text: str) -> set[str]:
    return {singular(w) for w in re.findall(r"[a-z0-9]+", text.lower())} - _FUNCTION_WORDS


def candidates(steps: Sequence[Step], generator, label: str | None, threshold: float,
               limit: int = MAX_CANDIDATES, also: Mapping[str, float] | None = None) -> list[tuple[str, float]]:
    """(concept, AUC on its own images): strong concepts of the history and of `also` (the
    unit's vocabulary sweep), one per scene, simplest first, then spread: after each pick the
    next is the simplest one that shares no content word with those picked, while any is
    left. A second meaning is looked for where the first one's words are absent: six
    phrasings of "teal" would test one meaning six times and leave a second unseen."""
    scores = dict(also or {})
    scores.update(best_scores(steps))  # the history's own images outweigh a sweep image
    strong = sorted(((c, a) for c, a in scores.items() if a >= threshold or c == label),
                    key=lambda item: (len(item[0].split()), -item[1]))
    seen: dict[str, str] = {}
    for concept, _ in sorted(strong, key=lambda item: -item[1]):  # per scene, the best-scoring spelling
        interpretation = generator.interpret(concept)
        seen.setdefault(interpretation.canonical or concept, concept)
    kept = set(seen.values())
    left = [(c, a) for c, a in strong if c in kept]
    chosen: list[tuple[str, float]] = []
    words: set[str] = set()
    while left and len(chosen) < limit:
        pick = next((item for item in left if not content_words(item[0]) & words), left[0])
        chosen.append(pick)
        left.remove(pick)
        words |= content_words(pick[0])
    if label is not None and all(c != label for c, _ in chosen):
        chosen = chosen[: limit - 1] + [(label, scores.get(label, 0.0))]
    return sorted(chosen, key=lambda item: (len(item[0].split()), -item[1]))


def shown_words(generator, scene: str) -> set[str]:
    """The content words of a drawn scene and of what its drawing shows under other words
    (`tools.generators.base.contains`: a grid shows stripes)."""
    return content_words(" ".join([scene, *contains(generator, scene)]))


class Analyst:
    """Runs the fresh-image tests for one unit, memoising them."""

    def __init__(self, probe: Probe, unit: int, *, threshold: float = 0.85, min_auc_low: float = 0.6,
                 max_p: float = 0.01, images: int = IMAGES, min_images: int = 3, seed: int = MEANING_SEED,
                 natural: np.ndarray | None = None, min_natural_auc: float = Bar().min_natural_auc):
        self.probe, self.unit = probe, unit
        self.natural, self.min_natural_auc = natural, min_natural_auc
        self.threshold, self.min_auc_low, self.max_p = threshold, min_auc_low, max_p
        self.images, self.min_images, self.seed = images, min_images, seed
        self.control = probe.control_activations()[:, unit]
        self.reference = 0.0  # the label's excess over the control mean: what "driving the unit" is measured against
        self.rendered = 0
        self._memo: dict[tuple[str, str], Test] = {}

    def excess(self, ev: Evidence) -> float:
        """Mean activation of the test's images above the control's mean."""
        return float(np.mean(ev.activations)) - float(self.control.mean()) if ev.activations else 0.0

    def natural_auc(self, ev: Evidence) -> float | None:
        """AUC of the test's images against natural photos (None where none are at hand)."""
        return auc(ev.activations, self.natural) if self.natural is not None else None

    def drives(self, ev: Evidence, natural: float | None = None) -> bool:
        """`natural`: the test's `natural_auc`, where natural photos are at hand."""
        return (ev.images >= self.min_images and ev.auc is not None and ev.auc >= self.threshold and ev.auc_low >= self.min_auc_low
                and ev.p <= self.max_p and self.excess(ev) >= MIN_RELATIVE * self.reference
                and (natural is None or natural >= self.min_natural_auc))

    def test(self, concept: str, without: str = "") -> Test:
        key = (concept, without)
        if key not in self._memo:
            self._memo[key] = self._test(concept, without)
        return self._memo[key]

    def _test(self, concept: str, without: str) -> Test:
        generator = self.probe.generator
        banned = content_words(without) if without else set()
        seeds, prompts, acts, keep = [], [], [], []
        for block in (range(self.seed, self.seed + self.images), range(self.seed + self.images, self.seed + self.images + EXTRA)):
            if block.start > self.seed and (not without or len(keep) >= self.images):
                break  # more seeds only when contrast images dropped some
            new = [generator.prompt(concept, s) for s in block]
            if without:
                new = [generator.ablate(p, without) for p in new]
            refs, rendered = self.probe.render(new, list(block))
            self.rendered += rendered
            for i, (seed, prompt, act) in enumerate(zip(block, new, self.probe.image_activations(refs)[:, self.unit])):
                seeds.append(seed), prompts.append(prompt), acts.append(float(act))
                if not banned or not shown_words(generator, generator.drawn(prompt, seed)) & banned:
                    keep.append(len(seeds) - 1)
        dropped = len(seeds) - len(keep)
        keep = keep[: self.images]
        drawn_as = prompts[0] if len(set(prompts)) == 1 else concept
        ev = evidence([acts[i] for i in keep], self.control, "control")
        natural = self.natural_auc(ev)
        return Test(concept=concept, without=without, drawn_as=drawn_as, seeds=[seeds[i] for i in keep],
                    scenes=[generator.drawn(prompts[i], seeds[i]) for i in keep],
                    dropped=dropped, evidence=ev, passed=self.drives(ev, natural),
                    informative=len(keep) >= self.min_images, natural_auc=natural)

    def compare(self, candidate: str, meaning: str) -> Comparison:
        """Distinct when each drives the unit without the other's attributes; the same when one
        of them, drawn without the other's attributes, no longer does; undecided when the
        generator cannot draw one without the other's attributes."""
        forward = self.test(candidate, meaning)
        backward = self.test(meaning, candidate) if forward.passed or not forward.informative else None
        tests = [t for t in (forward, backward) if t is not None]
        shared: set[str] = set()
        if any(t.informative and not t.passed for t in tests):
            outcome = "same"
        elif all(t.informative for t in tests) and len(tests) == 2:
            shared = self.common_drivers(forward) & self.common_drivers(backward)
            outcome = "same" if shared else "distinct"
        else:
            outcome = "undecided"
        return Comparison(candidate=candidate, meaning=meaning, forward=forward, backward=backward,
                          distinct=outcome == "distinct", outcome=outcome, shared=sorted(shared))

    def common_drivers(self, test: Test) -> set[str]:
        """Words of the scene drawn on every firing image of `test` (above the control's 95th
        percentile), counting the choices the generator made itself: "diagonal stripes" and
        "gradient" that both fire only when drawn yellow share a driver, yellow."""
        floor = float(np.percentile(self.control, 95))
        firing = [content_words(scene) for scene, act in zip(test.scenes, test.evidence.activations) if act > floor]
        return set.intersection(*firing) if len(firing) >= 2 else set()


def analyse(probe: Probe, unit: int, steps: Sequence[Step], label: str | None = None, *,
            threshold: float = 0.85, min_auc_low: float = 0.6, max_p: float = 0.01, images: int = IMAGES,
            max_candidates: int = MAX_CANDIDATES, max_meanings: int = MAX_MEANINGS,
            also: Mapping[str, float] | None = None) -> Polysemanticity:
    """The unit's meanings, each confirmed on fresh images and shown distinct by ablations
    and contrast images (module docstring). `also`: more concepts' AUC on their own images
    (the unit's vocabulary sweep) to draw candidates from."""
    photos = natural_photos(probe) if hasattr(probe, "control") else None  # an engine: tools.engine.Engine
    analyst = Analyst(probe, unit, threshold=threshold, min_auc_low=min_auc_low, max_p=max_p, images=images,
                      natural=photos[1][:, unit] if photos is not None else None)
    pool = [c for c, _ in candidates(steps, probe.generator, label, threshold, max_candidates, also)]
    if label is not None and label in pool:  # the label's own fresh images set the scale of "drives the unit"
        analyst.reference = max(0.0, analyst.excess(analyst.test(label).evidence))
    scores = {**(also or {}), **best_scores(steps)}
    meanings: list[Meaning] = []
    comparisons: dict[tuple[str, str], Comparison] = {}
    unconfirmed: list[str] = []
    pending = list(pool)
    changed = True
    while pending and changed:  # candidates left undecided get another pass once a new meaning opens
        changed = False
        for concept in list(pending):
            if not meanings:
                own = analyst.test(concept)
                pending.remove(concept)
                if own.passed:
                    meanings.append(Meaning(concept=concept, concepts=[concept], evidence=own,
                                            why="the first candidate confirmed on fresh images"))
                    changed = True
                else:
                    unconfirmed.append(concept)
                continue
            results = []
            for meaning in meanings:
                key = (concept, meaning.concept)
                if key not in comparisons:
                    comparisons[key] = analyst.compare(concept, meaning.concept)
                results.append((meaning, comparisons[key]))
                if comparisons[key].outcome == "same":
                    break
            same = next((m for m, c in results if c.outcome == "same"), None)
            if same is not None:
                same.concepts.append(concept)
                pending.remove(concept)
                changed = True
            elif all(c.outcome == "distinct" for _, c in results) and len(meanings) < max_meanings:
                tests = [t for _, c in results for t in (c.forward, c.backward) if t is not None]
                meanings.append(Meaning(
                    concept=concept, concepts=[concept], evidence=results[0][1].forward, distinct=tests,
                    why="drives the unit where " + " and ".join(repr(m.concept) for m, _ in results)
                        + " are absent, and each of those drives it without this one's attributes"))
                pending.remove(concept)
                changed = True
    unconfirmed += [f"{c} (undecided)" for c in pending]
    excess = {m.concept: analyst.excess(m.evidence.evidence) for m in meanings}
    strongest = max(excess.values(), default=0.0)
    weak = [m for m in meanings if excess[m.concept] < MIN_RELATIVE * strongest]
    unconfirmed += [f"{c} (drives the unit {excess[m.concept] / strongest:.0%} as hard as the strongest meaning, "
                    f"less than {MIN_RELATIVE:.0%}: a weaker response, not a meaning)" for m in weak for c in m.concepts]
    meanings = [m for m in meanings if m not in weak]
    for meaning in meanings:  # named by its simplest, then strongest, concept
        meaning.concept = min(meaning.concepts, key=lambda c: (len(c.split()), -scores.get(c, 0.0)))
    groups = [Group(concepts=m.concepts, best=max(m.concepts, key=lambda c: scores.get(c, 0.0)),
                    auc=max(scores.get(c, 0.0) for c in m.concepts)) for m in meanings]
    return Polysemanticity(groups=groups, polysemantic=len(meanings) >= 2, senses=[m.concept for m in meanings],
                           score_threshold=threshold, method="evidence", meanings=meanings,
                           comparisons=list(comparisons.values()), unconfirmed=unconfirmed,
                           images_rendered=analyst.rendered)
