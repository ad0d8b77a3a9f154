"""Polysemanticity: concepts grouped by meaning (MiniLM embeddings), distinct strong groups flagged."""

import json

import numpy as np
import pytest

from tools.history import ActivationStats, Step
from tools.polysemantic import Polysemanticity, analyse, cluster
from tools.scoring import Scores
from tools.text import default_embedder


def step(concept: str, auc: float, iteration: int = 1) -> Step:
    return Step(iteration=iteration, concept=concept, source="llm", prompts=[concept], seeds=[0], image_keys=["k"],
                images_rendered=1, activations=ActivationStats(mean=1, std=0, min=1, max=1),
                scores=Scores(auc=auc, mad=1.0, mean=1.0, u=1.0, p=0.01), seconds=0.1)


def history(*pairs: tuple[str, float]) -> list[Step]:
    return [step(concept, auc, i) for i, (concept, auc) in enumerate(pairs)]


LOW = [("blue noise", 0.31), ("white squares", 0.42)]


@pytest.fixture(scope="module")
def embedder():
    return default_embedder()


@pytest.mark.parametrize("other", ["green circles", "a dog's face"])
def test_two_unrelated_high_scoring_concepts_are_polysemantic(embedder, other):
    result = analyse(history(("red stripes", 0.95), (other, 0.93), *LOW), embedder)
    assert result.polysemantic and result.senses == ["red stripes", other]
    assert [g.best for g in result.groups][:2] == ["red stripes", other]
    assert "polysemantic" in result.describe()


def test_paraphrases_are_one_meaning(embedder):
    result = analyse(history(("red stripes", 0.95), ("striped red pattern", 0.93), ("red lines", 0.9), *LOW), embedder)
    assert not result.polysemantic and result.senses == ["red stripes"]
    top = result.groups[0]
    assert top.best == "red stripes" and top.auc == 0.95
    assert set(top.concepts) == {"red stripes", "striped red pattern", "red lines"}
    assert {g.best for g in result.groups[1:]} == {"blue noise", "white squares"}


def test_a_distinct_concept_below_the_threshold_does_not_count(embedder):
    result = analyse(history(("red stripes", 0.95), ("green circles", 0.8)), embedder)
    assert not result.polysemantic and len(result.groups) == 2


def test_a_concept_scored_twice_keeps_its_best_score(embedder):
    result = analyse(history(("red stripes", 0.6), ("red stripes", 0.9)), embedder)
    assert [(g.concepts, g.auc) for g in result.groups] == [(["red stripes"], 0.9)]


def test_empty_history_and_json_round_trip(embedder):
    empty = analyse([], embedder)
    assert empty.groups == [] and not empty.polysemantic and "no concept" in empty.describe()
    full = analyse(history(("red stripes", 0.95), ("green circles", 0.93)), embedder)
    assert Polysemanticity.model_validate(json.loads(full.model_dump_json())) == full


def test_clustering_merges_by_average_similarity():
    """Unit vectors at 0, 15, 40 and 150 degrees: {0, 15} to 40 averages 0.836 (single
    linkage would say 0.906, complete 0.766)."""
    angles = np.radians([0, 15, 40, 150])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert cluster(vectors, 0.85) == [[0, 1], [2], [3]]
    assert cluster(vectors, 0.8) == [[0, 1, 2], [3]]
    assert cluster(vectors, -1.0) == [[0, 1, 2, 3]] and cluster(vectors[:1], 0.5) == [[0]]
