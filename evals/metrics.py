"""Metrics of a labelling: ground-truth match, polysemantic recovery, CoSy, novelty, cost.

- Match: a label matches a true concept when its normalised words (`tools.text.normalise`)
  equal the concept's or an accepted paraphrase's, when the procedural generator draws the
  same scene for both (same canonical form), or when their text embeddings are at least
  `MATCH_THRESHOLD` similar AND they name no conflicting attribute of the generator's
  vocabulary (MiniLM puts "vertical stripes" 0.94 from "horizontal stripes").
- Strict match: a match that also names every colour (ink or background), orientation and
  size that the truth or one of its accepted phrasings names (`Matcher.strict`).
- Recovery (polysemantic units): the share of true concepts matched by some concept the
  method scored above `RECOVERY_AUC` while labelling.
- CoSy (Kopf et al. 2024): AUC and MAD of the unit on `COSY_IMAGES` fresh images of the
  final label (seeds `COSY_SEED`.., never used while labelling) against a whole control set.
- Beyond AUC (NeuronEval, ICML 2025): AUPRC and the correlation of the activation with the
  concept's presence, on the same CoSy images and control set (`auprc`, `correlation`).
- Trust: the label's verdict (explained, tools.verdict), the polysemantic flag's recall on OR
  units and false-positive rate on the others, and whether an OR unit's meanings match both
  of its true concepts (`meanings_match`).
- Novelty: the label is in none of ImageNet's class names, the Broden labels, or the 20k
  most common English words (as a phrase).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from evals.planted import Concept
from tools.control import shared_data  # noqa: F401  (the evals' shared data folder, as `metrics.shared_data`)
from tools.engine import Engine
from tools.generators.procedural import ProceduralGenerator
from tools.text import TextEmbedder, normalise, singular

MATCH_THRESHOLD = 0.8
RECOVERY_AUC = 0.85
COSY_IMAGES = 50
COSY_SEED = 5000


# --- ground truth ----------------------------------------------------------------------------
@dataclass
class Matcher:
    """Decides whether a label names a true concept, and says how."""

    embedder: TextEmbedder | None
    threshold: float = MATCH_THRESHOLD
    generator: ProceduralGenerator = field(default_factory=ProceduralGenerator)

    def how(self, label: str, concept: Concept) -> str:
        """'words', 'accepted', 'scene', 'meaning', or '' for no match."""
        key = normalise(label)
        if not key:
            return ""
        if key == normalise(concept.label):
            return "words"
        if key in {normalise(a) for a in concept.accept}:
            return "accepted"
        scene = self.generator.interpret(label).canonical
        if scene and scene in {self.generator.interpret(n).canonical for n in concept.names}:
            return "scene"
        if self.embedder is not None:
            names = [n for n in concept.names if not self._conflict(label, n)]
            if names and self.embedder.similarity(label, names).max() >= self.threshold:
                return "meaning"
        return ""

    def strict(self, label: str, concept: Concept) -> bool:
        """A match (`how`) that also names every colour, orientation and size the truth, or one
        of its accepted phrasings, names: "diagonal stripes" is no strict match for orange
        diagonal stripes. Background colours count as colours."""
        if not self.how(label, concept):
            return False
        said = _strict_values(self.generator, label)
        return any(_strict_values(self.generator, name) <= said for name in concept.names)

    def recovered(self, scored: list[tuple[str, float]], concepts: tuple[Concept, ...]) -> float:
        """Share of `concepts` matched by a scored concept with AUC above RECOVERY_AUC."""
        strong = [c for c, auc in scored if auc > RECOVERY_AUC]
        return sum(any(self.how(c, concept) for c in strong) for concept in concepts) / len(concepts)

    def _conflict(self, a: str, b: str) -> bool:
        """Both texts name a value of one attribute (colour, kind, size...) and no value in common."""
        words_a, words_b = _words(a), _words(b)
        for values in self.generator.vocabulary().values():
            in_a = {v for v in values if _words(v) <= words_a}
            in_b = {v for v in values if _words(v) <= words_b}
            if in_a and in_b and not in_a & in_b:
                return True
        return False


STRICT_SLOTS = {"colour": "colour", "background": "colour", "orientation": "orientation", "size": "size"}


def _strict_values(generator: ProceduralGenerator, text: str) -> set[tuple[str, str]]:
    """(attribute, value) pairs of the attributes a strict match must name."""
    return {(STRICT_SLOTS[slot], value) for slot, values in generator.slots(text).items()
            if slot in STRICT_SLOTS for value in values}


def _words(text: str) -> set[str]:
    return {singular(w) for w in re.findall(r"[a-z0-9]+", text.lower())}


# --- CoSy ----------------------------------------------------------------------------------------
@dataclass
class Cosy:
    """CoSy scores against one control set, through an engine whose cache holds the images
    and activations; a label's images are rendered and scored once for all units."""

    name: str
    engine: Engine
    _memo: dict = field(default_factory=dict, repr=False)

    def scores(self, label: str, unit: int) -> tuple[float, float]:
        self.prepare([label])
        s = self._memo[label].scores(unit)
        return s.auc, s.mad

    def beyond_auc(self, label: str, unit: int) -> tuple[float, float]:
        """AUPRC and correlation of the label's CoSy images against the control set."""
        self.prepare([label])
        concept, control = self._memo[label].activations[:, unit], self.engine.control_activations()[:, unit]
        return auprc(concept, control), correlation(concept, control)

    def prepare(self, labels: list[str]) -> None:
        """Render and score the images of every label not scored yet, together: the
        generator batches them across labels."""
        new = [label for label in dict.fromkeys(labels) if label not in self._memo]
        if new:
            evidence = self.engine.evaluate_many(new, self.engine.seeds(COSY_IMAGES, start=COSY_SEED))
            self._memo.update(zip(new, evidence))


# --- novelty -------------------------------------------------------------------------------------
def known_vocabulary(folder: Path) -> set[str] | None:
    """Normalised ImageNet class names (with synonyms), Broden labels (and their parts around
    '-') and common words; None when the shared data is absent."""
    files = [folder / n for n in ("imagenet-labels.txt", "broden-labels.txt", "vocab-20k.txt")]
    if not all(f.is_file() for f in files):
        return None
    imagenet, broden, words = (f.read_text().splitlines() for f in files)
    names = [n for line in imagenet for n in line.split(",")]
    names += [p for line in broden for p in (line, *line.split("-"))]
    return {normalise(n) for n in names + words if n.strip()}


def novel(label: str, vocabulary: set[str]) -> bool:
    return normalise(label) not in vocabulary


# --- beyond AUC (NeuronEval, ICML 2025) ------------------------------------------------------------
def auprc(concept, control) -> float:
    """Average precision with the concept's images as positives and the control images as
    negatives, ranked by the unit's activation (ties ranked pessimistically: scikit-learn's
    average_precision_score up to its tie handling)."""
    import numpy as np

    x, y = np.asarray(concept, float).ravel(), np.asarray(control, float).ravel()
    scores = np.concatenate([x, y])
    truth = np.concatenate([np.ones(len(x)), np.zeros(len(y))])
    order = np.lexsort((truth, -scores))  # equal activations: negatives first
    hits = truth[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(len(x), 1))


def correlation(concept, control) -> float:
    """Pearson correlation between the unit's activation and the concept's presence (1 on
    its images, 0 on the control's): the point-biserial correlation over both sets."""
    import numpy as np

    x, y = np.asarray(concept, float).ravel(), np.asarray(control, float).ravel()
    acts = np.concatenate([x, y])
    truth = np.concatenate([np.ones(len(x)), np.zeros(len(y))])
    if acts.std() == 0:
        return 0.0
    return float(np.corrcoef(acts, truth)[0, 1])


def meanings_match(matcher: Matcher, meanings: list[str], concepts) -> bool:
    """Whether every true concept of an OR unit is matched by one of the meanings."""
    return all(any(matcher.how(m, concept) for m in meanings) for concept in concepts)
