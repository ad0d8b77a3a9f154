import os

import pytest

from tools.concepts import ConceptRules
from tools.generators.procedural import ProceduralGenerator
from tools.text import TextEmbedder, default_embedder, normalise


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
    return ConceptRules(ProceduralGenerator(), default_embedder(), threshold=0.88)


def test_same_words_same_scene_and_paraphrase(dedup):
    tried = ["red polka dots", "blue stripes", "three yellow stars on blue"]
    assert dedup.accept("Red polka-dot", tried).duplicate_of == "red polka dots"
    verdict = dedup.accept("red spots", tried)
    assert verdict.duplicate_of == "red polka dots" and "same scene" in verdict.reason
    assert dedup.accept("green checkerboard", tried).accepted


def test_paraphrase_by_meaning_for_open_vocabulary():
    from tools.generators.base import Interpretation

    class OpenVocabulary:  # a generator without canonical forms, like diffusers
        def interpret(self, concept):
            return Interpretation(concept, concept.split(), [], None)

    dedup = ConceptRules(OpenVocabulary(), default_embedder(), threshold=0.88)
    verdict = dedup.accept("polka dots in red", ["red polka dots", "a dog"])
    assert verdict.duplicate_of == "red polka dots" and "paraphrase" in verdict.reason
    assert dedup.accept("a cat on a sofa", ["red polka dots", "a dog"]).accepted


def test_undrawable_concept_is_rejected(dedup):
    verdict = dedup.accept("golden retriever", [])
    assert verdict.undrawable and not verdict.accepted


def test_building_the_text_encoder_changes_no_environment_or_global_setting(monkeypatch):
    """It loads from the package's folder (local files only): no HF_HUB_OFFLINE for the whole process."""
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before, bars = dict(os.environ), hf_logging.is_progress_bar_enabled()
    vectors = TextEmbedder().embed(["red stripes", "blue dots"])
    assert dict(os.environ) == before and hf_logging.is_progress_bar_enabled() == bars
    assert vectors.shape == (2, 384) and abs(float(vectors[0] @ vectors[0]) - 1) < 1e-5


def test_different_scenes_of_a_closed_vocabulary_are_never_paraphrases(dedup):
    # MiniLM puts these 0.94 apart; the generator draws different images for them
    assert dedup.accept("vertical stripes", ["horizontal stripes"]).accepted
    assert dedup.accept("large gray stripes on red background", ["large gray and cyan stripes on red background"]).accepted


def test_the_one_rule_refuses_long_and_undrawable_concepts_even_without_dedup():
    """`loop.dedup = false` (the paper preset) lets repeats through, never what cannot be drawn."""
    rules = ConceptRules(ProceduralGenerator(size=16), None, dedup=False)
    assert rules.accept("red stripes", ["red stripes"]).accepted  # repeats allowed
    assert not rules.accept("golden retriever").accepted
    long = rules.accept("red " * 2_500)
    assert long.undrawable and "characters" in long.reason
    wordy = rules.accept(" ".join(["red"] * 12))
    assert wordy.undrawable and "words" in wordy.reason
    # operators must propose new concepts whatever the setting
    assert not rules.accept("red stripes", ["red stripes"], require_new=True).accepted


def test_fully_drawn_refuses_words_the_generator_ignores():
    rules = ConceptRules(ProceduralGenerator(size=16), None)
    assert rules.accept("red stripes", fully_drawn=True).accepted
    verdict = rules.accept("red stripes of a zebra", fully_drawn=True)
    assert not verdict.accepted and "ignores" in verdict.reason
