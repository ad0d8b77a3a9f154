"""The labelling graph driven by a scripted chat model on the colour net (unit 0 = redness)."""

import json

import pytest

from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from agent.llm import ScriptedChatModel
from agent.loop.label_choice import choose_label
from agent.runs.run import Run
from agent.runs.context import build_context
from tools.criterion import Criterion
from tools.errors import LineError
from tests.helpers import run_units, say, searched, with_loop


def test_duplicates_and_plurals_are_never_rescored_and_the_llm_is_told(settings):
    settings = with_loop(settings, max_iterations=6, patience=10, duplicate_streak=5, settle=0)
    replies = [say("red background"), say("Red Backgrounds"), say("blue stripes"), say("red backdrop"),
               say("blue stripe"), say("green circles"), say("red on black")]
    run, chat, states = run_units(settings, replies)
    state = states[0]
    concepts = [s.concept for s in state.steps]
    assert len(concepts) == len(set(concepts)), "a concept was scored twice"
    duplicates = [e for e in state.events if e.kind == "duplicate"]
    assert {e.concept for e in duplicates} >= {"red backgrounds", "blue stripe"}
    assert all(e.duplicate_of in concepts and e.reason for e in duplicates)
    # the LLM is asked again in the same iteration, told which earlier concept it repeated
    assert 'repeats "red background"' in chat.seen[2][-1].content
    assert [s.iteration for s in searched(state)] == list(range(1, 7))
    assert state.label is not None and state.stop_reason.startswith("budget")


def test_red_unit_gets_a_red_label(settings):
    settings = with_loop(settings, max_iterations=4)
    replies = [say("blue stripes"), say("large red square"), say("red background"), say("green noise"), say("red")]
    _, _, states = run_units(settings, replies)
    label = states[0].label
    assert "red" in label.concept and label.scores.auc > 0.9
    llm_steps = [s for s in states[0].steps if s.source == "llm"]
    assert llm_steps and all(s.llm_calls == 1 and s.llm_tokens > 0 for s in llm_steps)


def test_an_llm_that_repeats_itself_still_gets_a_new_concept_scored_every_iteration(settings):
    settings = with_loop(settings, max_iterations=12, max_images=500, duplicate_streak=2, patience=3, summary=False,
                         settle=0)
    run, chat, states = run_units(settings, [say("red background")] + [say("red backgrounds")] * 50)
    state = states[0]
    assert [s.iteration for s in searched(state)] == list(range(1, 13))
    concepts = [s.concept for s in state.steps]
    assert len(concepts) == len(set(concepts)) and concepts.count("red background") == 1
    # asked once more after each duplicate, then an operator's concept took its place
    assert sum(s.source == "operator" for s in searched(state)) == 11
    handover = [e for e in state.events if e.kind == "strategy"]
    assert handover and handover[-1].strategy == "operators" and "rejected proposals" in handover[-1].reason
    assert chat.calls == 1 + 2 * (handover[-1].iteration - 1)  # iterations 2.. asked twice; none after
    assert state.stop_reason == "budget: 12 iterations"


def test_garbage_from_the_llm_is_counted_and_operators_take_over(settings):
    settings = with_loop(settings, max_iterations=5, failure_streak=2, summary=False)
    run, chat, states = run_units(settings, ["I like red!!", "", "{\"concept\": 42}"] * 20)
    state = states[0]
    assert state.usage.llm_failures >= 2 * (settings.llm.retries + 1)
    assert [e for e in state.events if e.kind == "llm_failure"]
    assert any(e.kind == "strategy" and e.strategy == "operators" for e in state.events)
    assert [s.source for s in searched(state)] == ["operator"] * 5 and state.label is not None


def test_crash_inside_a_node_then_resume_repeats_no_scored_step(settings):
    settings = with_loop(settings, max_iterations=4, summary=False, patience=10)
    engine = build_engine(settings)
    run = Run.create(settings, [0], "crash")
    down = ScriptedChatModel(replies=[say("red background"), say("blue noise"), ConnectionError("server down")])
    with pytest.raises(LineError, match="did not answer"):
        run.label(build_context(settings, engine, chat=down))
    before = run.states()[0]
    assert [s.concept for s in before.steps if s.source == "llm"] == ["red background", "blue noise"]

    reopened = Run.open("crash", settings.runs_dir)
    up = ScriptedChatModel(replies=[say("green circles"), say("white squares")])
    state = reopened.label(build_context(reopened.settings, build_engine(reopened.settings), chat=up))[0]
    concepts = [s.concept for s in state.steps]
    assert len(concepts) == len(set(concepts))
    assert concepts[: len(before.steps)] == [s.concept for s in before.steps]
    assert {"green circles", "white squares"} <= set(concepts)
    assert state.label is not None and up.calls == 2
    history = json.loads((reopened.folder / "history.json").read_text())
    assert history["units"]["0"]["label"]["concept"] == state.label.concept


def test_image_budget_stops_the_run_and_leaves_room_to_confirm(settings):
    settings = with_loop(settings, max_images=40, max_iterations=10, summary=False)
    _, _, states = run_units(settings, [say(c) for c in ("red background", "blue noise", "green circles", "white")])
    state = states[0]
    assert state.stop_reason == "budget: 40 images" and state.finalists and state.images_used() <= 40


def test_concept_bank_seeds_later_units_for_free(settings):
    settings = with_loop(settings, max_iterations=2, bank_top=2, summary=False)
    _, _, states = run_units(settings, [say("red background"), say("blue noise")], units=(0, 2))
    banked = [s for s in states[2].steps if s.source == "bank"]
    assert banked and all(s.images_rendered == 0 for s in banked)


def test_review_pauses_for_a_person_then_resumes_with_their_verdict(settings):
    settings = with_loop(settings, max_iterations=2, review=True, summary=False)
    engine = build_engine(settings)
    run = Run.create(settings, [0], "review")
    context = build_context(settings, engine, chat=ScriptedChatModel(replies=[say("red background"), say("blue noise")]))
    waiting = run.label(context)[0]  # nobody to ask: the unit waits, nothing is lost
    assert waiting.label is None and len(waiting.steps) >= 3
    questions = []

    def person(question):
        questions.append(question)
        return "white squares"

    state = Run.open("review", settings.runs_dir).label(context, reviewer=person)[0]
    assert questions[0]["unit"] == 0 and questions[0]["label"] == choose_label(waiting, context.criterion)[0]
    assert state.label.concept == "white squares" and state.step("white squares").source == "user"
    assert any(e.kind == "review" for e in state.events)


def test_units_labelled_concurrently_share_the_checkpoint_database(settings):
    settings = with_loop(settings, max_iterations=2, summary=False)
    data = settings.model_dump()
    data["concurrency"] = 2
    settings = load_settings(**data)
    run, _, states = run_units(settings, [say("red background"), say("blue noise"), say("green grid")], units=(0, 1, 2))
    assert sorted(states) == [0, 1, 2] and all(s.label is not None for s in states.values())
    assert sorted(run.states()) == [0, 1, 2]


def test_a_dead_llm_server_is_a_clear_error_and_loses_nothing(settings):
    data = settings.model_dump()
    data["llm"].update(provider="openai-compatible", base_url="http://127.0.0.1:9/v1", retries=0, timeout=2)
    settings = with_loop(load_settings(**data), max_iterations=3)
    engine = build_engine(settings)
    run = Run.create(settings, [0], "dead")
    with pytest.raises(LineError, match="did not answer"):
        run.label(build_context(settings, engine))
    assert sum(s.source == "init" for s in run.states()[0].steps) == 3  # the initial pool is saved


def test_unusable_summary_falls_back_to_a_generalisation(settings):
    settings = with_loop(settings, max_iterations=2)
    replies = [say("large red square on black"), say("red background"), "no idea, sorry"]
    _, _, states = run_units(settings, replies)
    state = states[0]
    summary = next(s for s in state.steps if s.source == "summary")
    assert summary.reasoning.startswith("generalise") and len(summary.concept.split()) < 5
    assert any(e.kind == "llm_failure" and e.source == "summary" for e in state.events)


def test_the_paper_loop_neither_generalises_nor_prefers_short_labels(settings):
    from agent.config import LoopConfig

    paper = LoopConfig.paper().model_dump() | {"init_top": 2, "init_random": 1, "max_iterations": 2, "images_per_concept": 3}
    data = settings.model_dump()
    data["loop"] = paper
    _, _, states = run_units(load_settings(**data), [say("red background"), say("red background"), "garbage"])
    state = states[0]
    assert [s.concept for s in state.steps].count("red background") == 2  # no dedup in the paper's loop
    assert not any(s.source == "summary" for s in state.steps) and not state.finalists
    assert state.label.concept == state.best(Criterion("auc")).concept and state.label.criterion == "auc"


def test_without_stall_handling_the_llm_proposes_every_iteration(settings):
    settings = with_loop(settings, stall=False, patience=1, max_iterations=4, summary=False)
    ideas = ["blue noise", "green stripes", "white rings", "orange zigzag"]
    _, chat, states = run_units(settings, [say(idea) for idea in ideas])
    state = states[0]
    assert [(s.source, s.concept) for s in searched(state)] == [("llm", idea) for idea in ideas]
    assert not [e for e in state.events if e.kind == "strategy"] and chat.calls == 4


# --- choosing the label: a target with known units, a control set without red ------------------
@pytest.fixture
def red_settings(tmp_path):
    """The red detector (unit 0: share of red pixels; unit 1: any red at all) against
    control images with no red; only the scripted LLM proposes (no pool, no sweep)."""
    from tools.generators.procedural import ProceduralGenerator

    folder = tmp_path / "control"
    folder.mkdir()
    generator = ProceduralGenerator(64)
    scenes = ["plain blue", "plain green", "plain gray", "blue stripes on white background",
              "green polka dots on black background", "white checkerboard on blue background",
              "navy waves on white background", "cyan grid on black background"]
    for i, scene in enumerate(scenes):
        for seed in range(3):
            generator.render([scene], [100 + seed])[0].save(folder / f"{i}{seed}_{scene.replace(' ', '_')}.png")
    return load_settings(
        model="tests.tiny_models:red_detector", layer="units", control=f"dir:{folder}",
        cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
        loop={"init_top": 0, "init_random": 0, "sweep": False, "bank_top": 0, "summary": False, "dedup": True},
    )


def test_of_two_concepts_at_auc_one_the_one_that_drives_the_unit_harder_wins(red_settings):
    settings = with_loop(red_settings, max_iterations=2, stall=False)
    _, _, states = run_units(settings, [say("red ring"), say("plain red background")])
    state = states[0]
    ring, plain = state.step("red ring"), state.step("plain red background")
    assert ring.scores.auc == plain.scores.auc == 1.0 and plain.scores.mad > 10 * ring.scores.mad
    assert state.label.concept == "plain red background"
    assert "'plain red background'" in state.label.reason and "MAD" in state.label.reason


def test_a_shorter_concept_as_strong_on_the_confirmation_images_wins(red_settings):
    settings = with_loop(red_settings, max_iterations=1, stall=False)
    _, _, states = run_units(settings, [say("red polka dots on white background")], units=(1,))
    state = states[1]
    shorter = state.finalist("red polka dots")
    assert shorter is not None and shorter.why.startswith("a shorter form") and shorter.fresh == settings.loop.confirm_images
    assert state.label.concept == "red polka dots" and "shorter" in state.label.reason


def test_a_label_that_passes_the_bar_is_never_traded_for_a_shorter_one_that_fails_it(red_settings):
    """The run above, judged again with a verdict that fails the shorter form: the label
    keeps the longer concept, and says which finalist was left out and why."""
    settings = with_loop(red_settings, max_iterations=1, stall=False)
    _, _, states = run_units(settings, [say("red polka dots on white background")], units=(1,))
    state, criterion = states[1], settings.loop.judge()
    assert choose_label(state, criterion)[0] == "red polka dots"
    concept, _, reason = choose_label(state, criterion, explained=lambda f: f.concept != "red polka dots")
    assert concept != "red polka dots" and concept in {f.concept for f in state.finalists}
    assert "left out that fail the verdict's bar: 'red polka dots'" in reason
    # when no finalist passes, or every one does, the bar changes nothing
    assert choose_label(state, criterion, explained=lambda f: False)[0] == "red polka dots"
    assert choose_label(state, criterion, explained=lambda f: True)[0] == "red polka dots"
