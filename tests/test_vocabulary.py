"""The vocabulary sweep: the generator's whole vocabulary scored once for every unit, rendered
once per generator, and a floor under every label (the vocabulary's confirmed best)."""

from agent.config import load_settings
from agent.runs.context import sweep_atoms
from agent.runs.engine_factory import build_engine
from tests.helpers import run_units, say, searched, with_loop
from tools.generators.base import sweep_vocabulary
from tools.generators.procedural import ProceduralGenerator

SMALL_VOCABULARY = ["plain red", "plain green", "plain blue", "red stripes", "blue circles", "green checkerboard",
                    "white noise", "yellow polka dots"]


def vocabulary_file(tmp_path, concepts=SMALL_VOCABULARY):
    path = tmp_path / "vocabulary.txt"
    path.write_text("\n".join(concepts) + "\n")
    return str(path)


def test_the_procedural_generator_offers_everything_it_can_say_once_per_scene():
    generator = ProceduralGenerator()
    concepts = sweep_vocabulary(generator)
    scenes = [generator.interpret(c).canonical for c in concepts]
    assert len(concepts) > 500 and len(set(scenes)) == len(scenes) and all(scenes)
    assert {"red stripes", "large blue polka dots", "navy checkerboard", "plain red"} <= set(concepts)
    atoms = sweep_atoms(load_settings().loop, generator)  # the atoms first, then the rest of the vocabulary
    assert [a.concept for a in atoms[:len(generator.atoms())]] == [a.concept for a in generator.atoms()]
    assert {a.concept for a in atoms} >= set(concepts) - {c for c in concepts if generator.interpret(c).canonical in
                                                          {generator.interpret(a.concept).canonical for a in atoms}}


def test_the_sweep_is_rendered_once_for_two_layers_and_a_second_model(settings, tmp_path):
    concepts = SMALL_VOCABULARY
    rendered = [build_engine(settings.model_copy(update={"layer": layer})).sweep(concepts) for layer in ("relu", "features")]
    other = settings.model_copy(update={"model": "tests.tiny_models:tiny_cnn", "layer": "relu1"})
    rendered.append(build_engine(other).sweep(concepts))
    assert rendered == [len(concepts) * settings.loop.images_per_concept, 0, 0]


def test_a_label_is_never_weaker_than_the_vocabularys_confirmed_best(settings, tmp_path):
    """Unit 0 is redness. A scripted LLM proposes only concepts without red: the search ends
    when it stops improving, and the label is at least as strong, on fresh images, as the
    vocabulary's best finalist."""
    settings = with_loop(settings, sweep=True, sweep_concepts=vocabulary_file(tmp_path), max_iterations=8, settle=3,
                         summary=False, search_when="always")  # the search runs though the vocabulary explains unit 0
    replies = [say(c) for c in ("green circles", "blue stripes", "white noise on black", "yellow squares")] * 3
    _, _, states = run_units(settings, replies)
    state, criterion = states[0], settings.loop.judge()
    assert state.stop_reason == "settled: no new best in 3 iterations" and len(searched(state)) == 3
    swept = [s for s in state.steps if s.source == "sweep"]
    shortlist = {s.concept for s, _ in criterion.shortlist(swept, lambda s: s.scores, lambda s: s.concept,
                                                           settings.loop.confirm_top)}
    assert "plain red" in shortlist and shortlist <= {f.concept for f in state.finalists}  # all confirmed
    best = criterion.order([f for f in state.finalists if f.concept in shortlist], lambda f: f.scores)[0]
    assert not criterion.better(best.scores, state.label.scores)
    assert "red" in state.label.concept and state.label.scores.auc > 0.9


def test_the_search_runs_only_where_the_vocabulary_falls_short(settings, tmp_path):
    """With the default `search_when = "unexplained"`, a unit one of whose vocabulary
    finalists passes the verdict's bar on fresh images is labelled without a search and
    without an LLM call; take red out of the vocabulary and the same unit (redness) is
    searched, and the LLM's "plain red" becomes its label."""
    replies = [say("plain red"), say("red squares"), say("red noise")]
    vocabulary = with_loop(settings, sweep=True, sweep_concepts=vocabulary_file(tmp_path), max_iterations=3, settle=2)
    assert vocabulary.loop.search_when == "unexplained"
    _, chat, states = run_units(vocabulary, replies)
    state = states[0]
    assert state.vocabulary_explains() and state.stop_reason.startswith("the vocabulary explains the unit")
    assert not searched(state) and state.usage.llm_calls == 0 and state.label_source() == "sweep"
    assert "red" in state.label.concept and state.label.explained
    assert state.label.confidence.evidence.seeds == "3000-3002"  # judged on images that chose nothing
    no_red = tmp_path / "no-red"
    no_red.mkdir()
    beyond = with_loop(settings, sweep=True, sweep_concepts=vocabulary_file(no_red, ["plain green", "plain blue", "white noise"]),
                       max_iterations=3, settle=2, init_top=0, bank_top=0)
    _, _, states = run_units(beyond, replies, run_id="t2")
    state = states[0]
    assert state.vocabulary_verdict is not None and not state.vocabulary_verdict.explained
    assert searched(state) and state.usage.llm_calls >= 1
    assert state.label.concept == "plain red" and state.label_source() == "llm"


def test_layers_of_one_model_share_one_forward_per_batch(settings):
    """A network run's sweep and control set: one forward a batch for all layers, the same
    numbers each layer's own forward gives, and nothing left for the layers to compute."""
    from agent.runs.engine_factory import build_engines
    from tools.activations import layer_activations
    from tools.engine import prepare_layers

    settings = settings.model_copy(update={"model": "tests.tiny_models:tiny_cnn"})
    engines = build_engines(settings, ["relu1", "relu2"])
    model = engines[0].model
    forwards = []
    model.module.register_forward_pre_hook(lambda module, inputs: forwards.append(len(inputs[0])))
    cost = prepare_layers(engines, SMALL_VOCABULARY)
    images = len(engines[0].control.keys) + len(SMALL_VOCABULARY) * settings.loop.images_per_concept
    assert cost == {"images_rendered": len(SMALL_VOCABULARY) * settings.loop.images_per_concept, "images_forwarded": images}
    # each image went through the model once for both layers (besides a one-image probe per layer for its units)
    assert sum(forwards) == images + 2 and forwards.count(1) == 2
    forwards.clear()
    evidence = {e.layer: e.sweep_evidence(SMALL_VOCABULARY) for e in engines}
    assert not forwards and all(e.control_activations().shape[0] == len(e.control.keys) for e in engines)
    own = layer_activations(model, "relu2", [engines[1].load_image(r) for r in evidence["relu2"][0].images])
    assert abs(own - evidence["relu2"][0].activations).max() < 1e-5


def test_the_embedded_llm_does_not_propose_by_default_and_any_other_does(settings):
    """loop.llm_proposals = "auto": the embedded model's proposals changed no measured label
    (evals/README.md), so a labelling run's search is then the operators'; a chat model given
    in code, another provider, or "on" lets the LLM propose; the paper's loop always does."""
    from agent.chat.session import chat_context
    from agent.config import LoopConfig
    from agent.runs.context import build_context
    from agent.llm import ScriptedChatModel

    engine = build_engine(settings)
    assert settings.llm.embedded_default and settings.loop.llm_proposals == "auto"
    embedded = build_context(settings, engine)
    assert embedded.chat is None and embedded.loop.max_llm_calls == 0  # no model loaded, no call to spend
    scripted = ScriptedChatModel(replies=[say("plain red")])
    given = build_context(settings, engine, chat=scripted)
    assert given.chat is scripted and given.loop.max_llm_calls == settings.loop.max_llm_calls
    off = with_loop(settings, llm_proposals="off")
    assert build_context(off, engine, chat=scripted).chat is None
    assert with_loop(settings, llm_proposals="on").loop.llm_proposes(settings.llm)
    assert LoopConfig.paper().llm_proposes(settings.llm)
    for other in ({"provider": "openai"}, {"gguf": "/models/larger.gguf"}):  # any LLM but the embedded SmolLM2
        assert settings.loop.llm_proposes(settings.llm.model_copy(update=other))
    assert chat_context(off, engine, chat=scripted).chat is scripted  # the chat always talks with its LLM
