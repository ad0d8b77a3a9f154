import pytest

from agent.dedup import Deduplicator
from tools.generators.procedural import ProceduralGenerator
from tools.text import default_embedder, normalise


@pytest.mark.parametrize("a, b", [
    ("Red Stripes", "red stripe"), ("the polka dots", "polka-dots"), ("butterflies", "butterfly"),
    ("boxes", "box"), ("stripes, red", "red stripes"),
])
def test_normalise_catches_case_articles_plurals_order(a, b):
    assert normalise(a) == normalise(b)


def test_normalise_keeps_different_words_apart():
    assert normalise("red stripes") != normalise("blue stripes")
    assert normalise("glass") == "glass"


@pytest.fixture(scope="module")
def dedup():
    return Deduplicator(ProceduralGenerator(), default_embedder(), threshold=0.88)


def test_same_words_same_scene_and_paraphrase(dedup):
    tried = ["red polka dots", "blue stripes", "three yellow stars on blue"]
    assert dedup.check("Red polka-dot", tried).duplicate_of == "red polka dots"
    verdict = dedup.check("red spots", tried)
    assert verdict.duplicate_of == "red polka dots" and "same scene" in verdict.reason
    assert dedup.check("green checkerboard", tried).accepted


def test_paraphrase_by_meaning_for_open_vocabulary():
    from tools.generators.base import Interpretation

    class OpenVocabulary:  # a generator without canonical forms, like diffusers
        def interpret(self, concept):
            return Interpretation(concept, concept.split(), [], None)

    dedup = Deduplicator(OpenVocabulary(), default_embedder(), threshold=0.88)
    verdict = dedup.check("polka dots in red", ["red polka dots", "a dog"])
    assert verdict.duplicate_of == "red polka dots" and "paraphrase" in verdict.reason
    assert dedup.check("a cat on a sofa", ["red polka dots", "a dog"]).accepted


def test_undrawable_concept_is_rejected(dedup):
    verdict = dedup.check("golden retriever", [])
    assert verdict.undrawable and not verdict.accepted
