"""Polysemanticity from the history: distinct meanings that each drive the unit.

Two analyses share the result type `Polysemanticity`:

- `tools.meanings.analyse` (what labels carry, method "evidence"): meanings confirmed on
  fresh images and shown distinct by ablations and contrast images; its records (`Test`,
  `Meaning`, `Comparison`) live here so that checkpoints know one module for them.
- `analyse` below (method "words"): concepts grouped by what their words mean. Words are no
  evidence that a unit responds for different reasons (MiniLM puts "plain gray" far from
  "gray hearts"), so this grouping no longer sets the flag of a label; it is kept as a quick
  view of the history's themes.

The word grouping: the concepts of a neuron's history are grouped by meaning: text embeddings (unit length),
then agglomerative clustering with average linkage (scipy) that merges groups while their mean
pairwise cosine similarity is at least `group_similarity`. A group scores its best concept's
AUC. The unit is polysemantic when two or more groups score at least `score_threshold` and
their centroids (mean embeddings) have a cosine similarity below `distinct_below`: it
responds to things that are far apart in meaning, not to paraphrases of one thing.

Pure functions over `Step`s; the result is a pydantic model, JSON-serialisable as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, Field
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from tools.verdict import Evidence

if TYPE_CHECKING:
    from tools.history import Step


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray:
        """texts x dim, rows of unit length (tools.text.TextEmbedder)."""


class Group(BaseModel):
    """Concepts of one meaning, best first."""

    concepts: list[str]
    best: str
    auc: float = Field(description="AUC of the best concept")


class Test(BaseModel):
    """One piece of fresh-image evidence: `concept` drawn with `without`'s attributes removed
    (or as is, when `without` is empty)."""

    concept: str
    without: str = ""
    drawn_as: str = Field("", description="what was rendered: the concept, or its counterfactual")
    seeds: list[int] = Field(default_factory=list, description="the fresh seeds kept (contrast images only)")
    dropped: int = Field(0, description="fresh images dropped because their scene still showed `without`'s attributes")
    evidence: Evidence
    passed: bool
    scenes: list[str] = Field(default_factory=list, description="what was drawn on each kept image (generator.drawn)")
    informative: bool = Field(True, description="enough contrast images were left to tell (else the generator "
                                                "could not draw the concept without the other's attributes)")
    natural_auc: float | None = Field(None, description="AUC of its images against natural photos, where at hand")

    def text(self) -> str:
        if not self.informative:
            return f"{self.concept!r} without {self.without!r}: the generator could not draw it without them"
        what = f"{self.concept!r} without {self.without!r}" if self.without else repr(self.concept)
        drawn = f" (drawn as {self.drawn_as!r})" if self.drawn_as and self.drawn_as != self.concept else ""
        natural = f"; against natural photos AUC {self.natural_auc:.2f}" if self.natural_auc is not None else ""
        return (f"{what}{drawn}: {self.evidence.text()}{natural} -> "
                f"{'drives the unit' if self.passed else 'does not drive it'}")


class Meaning(BaseModel):
    """One reason for the unit to fire, confirmed on fresh images."""

    concept: str = Field(description="its name: the simplest concept of the group")
    concepts: list[str] = Field(default_factory=list, description="the candidates that joined it")
    evidence: Test = Field(description="the fresh images that confirm it (a later meaning: without the earlier ones' attributes)")
    distinct: list[Test] = Field(default_factory=list,
                                 description="the tests that show it distinct from each earlier meaning, both ways")
    why: str = ""

    def text(self) -> str:
        return f"{self.concept!r}: {self.evidence.evidence.text()}" + (f"; distinct: {self.why}" if self.distinct else "")


class Comparison(BaseModel):
    """A candidate tested against a meaning, both ways."""

    candidate: str
    meaning: str
    forward: Test | None = Field(None, description="the candidate without the meaning's attributes")
    backward: Test | None = Field(None, description="the meaning without the candidate's attributes")
    distinct: bool
    outcome: str = Field("", description="distinct, same (one of them needs the other's attributes) or undecided")
    shared: list[str] = Field(default_factory=list,
                              description="attributes every firing image of both tests showed (then not distinct)")


class Polysemanticity(BaseModel):
    """The meanings in a neuron's history and whether several distinct ones drive the unit."""

    groups: list[Group] = Field(description="groups of concepts by meaning, best AUC first")
    polysemantic: bool
    senses: list[str] = Field(default_factory=list,
                              description="the distinct meanings' names (2+ when polysemantic)")
    score_threshold: float
    group_similarity: float = 0.0
    distinct_below: float = 0.0
    method: str = Field("words", description="evidence (tools.meanings: fresh images, ablations) or words (embeddings)")
    meanings: list[Meaning] = Field(default_factory=list, description="evidence: each meaning with its fresh images")
    comparisons: list[Comparison] = Field(default_factory=list, description="evidence: every candidate-meaning test")
    unconfirmed: list[str] = Field(default_factory=list,
                                   description="evidence: strong candidates whose fresh images did not confirm them")
    images_rendered: int = Field(0, description="evidence: images the tests had to render")

    def describe(self) -> str:
        """One line for people and for the agent."""
        if self.method == "evidence":
            if not self.meanings:
                return "no meaning confirmed on fresh images" + (
                    f" (not confirmed: {', '.join(map(repr, self.unconfirmed))})" if self.unconfirmed else "")
            names = "; ".join(m.text() for m in self.meanings)
            head = (f"polysemantic, {len(self.meanings)} distinct meanings" if self.polysemantic
                    else "one meaning")
            return f"{head} confirmed on fresh images: {names}"
        strong = [g for g in self.groups if g.auc >= self.score_threshold]
        if self.polysemantic:
            senses = ", ".join(f"{g.best!r} ({g.auc:.2f})" for g in strong if g.best in self.senses)
            return f"polysemantic: {senses} each score >= {self.score_threshold:.2f} and are far apart in meaning"
        if strong:
            return f"one meaning scores >= {self.score_threshold:.2f}: {strong[0].best!r} ({strong[0].auc:.2f})"
        return f"no concept scores >= {self.score_threshold:.2f} yet"


def analyse(steps: Sequence[Step], embedder: Embedder, *, score_threshold: float = 0.85,
            group_similarity: float = 0.6, distinct_below: float = 0.5) -> Polysemanticity:
    """Group the history's concepts by meaning and flag distinct high-scoring groups."""
    scores = best_scores(steps)
    concepts = sorted(scores, key=lambda c: -scores[c])
    vectors = embedder.embed(concepts) if concepts else np.zeros((0, 1))
    clusters = cluster(vectors, group_similarity)  # by first index, and concepts by score: best group first
    groups = [Group(concepts=[concepts[i] for i in members], best=concepts[min(members)],
                    auc=scores[concepts[min(members)]]) for members in clusters]
    strong = [members for members, group in zip(clusters, groups) if group.auc >= score_threshold]
    senses = [concepts[min(members)] for members in distinct(vectors, strong, distinct_below)]
    return Polysemanticity(groups=groups, polysemantic=len(senses) >= 2, senses=senses,
                           score_threshold=score_threshold, group_similarity=group_similarity,
                           distinct_below=distinct_below)


def best_scores(steps: Sequence[Step]) -> dict[str, float]:
    """Each concept's best AUC in the history."""
    scores: dict[str, float] = {}
    for step in steps:
        scores[step.concept] = max(step.scores.auc, scores.get(step.concept, -1.0))
    return scores


def cluster(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Average-linkage agglomerative clustering on cosine similarity (scipy), merging while
    the most similar pair of groups has a mean pairwise similarity >= threshold. Groups are
    lists of ascending indices, ordered by their first index."""
    if len(vectors) < 2:
        return [[i] for i in range(len(vectors))]
    tree = linkage(pdist(vectors, "cosine").clip(0.0, 2.0), method="average")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return sorted(groups.values())


def centroid(vectors: np.ndarray, members: list[int]) -> np.ndarray:
    mean = vectors[members].mean(axis=0)
    return mean / (np.linalg.norm(mean) or 1.0)


def distinct(vectors: np.ndarray, groups: list[list[int]], below: float) -> list[list[int]]:
    """Groups (taken in order) whose centroid is less similar than `below` to every one kept
    before them."""
    kept: list[list[int]] = []
    for members in groups:
        if all(centroid(vectors, members) @ centroid(vectors, other) < below for other in kept):
            kept.append(members)
    return kept
