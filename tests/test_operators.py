"""Operators: concepts read as attribute slots, evidence from images, candidates in order."""

import random

from agent.loop import operators
from tools.generators.base import SlotReader, slot_reader
from tools.generators.diffusion import DiffusersGenerator
from tools.generators.procedural import ProceduralGenerator

GENERATOR = ProceduralGenerator(64)
READER = slot_reader(GENERATOR)


def test_operators_read_slots_from_the_generator_and_open_vocabularies_have_none():
    assert isinstance(GENERATOR, SlotReader) and READER is GENERATOR
    assert slot_reader(DiffusersGenerator.__new__(DiffusersGenerator)) is None
    ranking = operators.attribute_ranking([("three crimson discs on navy blue background", 1.0)], READER)
    assert ranking == {"count": ["three"], "colour": ["red"], "kind": ["circle"], "background": ["navy"]}
    assert operators.attribute_ranking([("a red car", 1.0)], None) == {}


def test_evidence_ranks_each_attribute_by_the_images_that_hold_it():
    images = [("vertical red stripes on teal background", 0.9), ("vertical magenta stripes on brown background", 0.4),
              ("plain red", 0.1), ("yellow polka dots on teal background", 0.05)]
    ranking = operators.attribute_ranking(images, READER)
    assert ranking["colour"][:2] == ["red", "magenta"] and ranking["kind"][0] == "stripes"
    assert ranking["orientation"] == ["vertical"] and list(ranking)[0] in ("colour", "kind", "orientation")


def test_candidates_start_from_the_favourite_scenes_then_refine_the_best_attribute_by_attribute():
    ranking = {"colour": ["red", "magenta"], "kind": ["stripes", "polka dots"], "orientation": ["vertical"]}
    found = list(operators.candidates(["stripes", "plain red"], ranking, READER, random.Random(0),
                                      scenes=["vertical red stripes on teal background"]))
    concepts = [GENERATOR.interpret(c).canonical for c, _ in found]
    assert concepts[0] == "vertical red stripes on teal background"
    assert found[1][1] == "add colour 'red' to 'stripes'" and concepts[1] == "red stripes"
    assert "vertical stripes" in concepts[:4]
    assert any(how.startswith("swap kind 'stripes' for 'polka dots'") for _, how in found)
    assert any(how.startswith("combine") for _, how in found)


def test_generalisations_leave_out_one_attribute_at_a_time():
    shorter = [c for c, _ in operators.generalisations("small red polka dots on blue background", READER)]
    assert shorter[0] == "small red polka dots" and "red polka dots on blue background" in shorter
    assert [c for c, _ in operators.generalisations("one red blob", READER)] == ["one blob", "red blobs"]  # not "blobs"
    assert [c for c, _ in operators.generalisations("a red car on the road")] == [
        "a red car", "red car on the road", "a car on the road", "a red on the road", "a red car the road",
        "a red car on road", "a red car on the"]


def test_open_vocabularies_merge_the_best_concept_with_the_best_atoms():
    found = list(operators.candidates(["a red car"], {}, None, random.Random(0), atoms=["wheel", "road"]))
    assert found[:2] == [("a red car wheel", "add the best atom 'wheel' to 'a red car'"),
                         ("a red car road", "add the best atom 'road' to 'a red car'")]


def test_attribute_questions_are_asked_of_the_generators_slots():
    from agent.chat.probe import asked_attributes

    assert asked_attributes("Does the colour or the pattern matter?", READER) == ["colour", "kind"]
    assert asked_attributes("Does the colour matter?", None) == []  # open vocabularies have no slots
