"""Polysemanticity from the history: distinct meanings that each drive the unit.

The concepts of a neuron's history are grouped by meaning: text embeddings (unit length),
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


class Polysemanticity(BaseModel):
    """The meanings in a neuron's history and whether several distinct ones score high."""

    groups: list[Group] = Field(description="groups of concepts by meaning, best AUC first")
    polysemantic: bool
    senses: list[str] = Field(default_factory=list,
                              description="best concepts of the distinct high-scoring groups (2+ when polysemantic)")
    score_threshold: float
    group_similarity: float
    distinct_below: float

    def describe(self) -> str:
        """One line for people and for the agent."""
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
