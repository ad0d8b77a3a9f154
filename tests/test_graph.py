"""The labelling graph driven by a scripted chat model on the colour net (unit 0 = redness)."""

import json

import pytest

from agent.config import load_settings
from agent.engines import build_engine
from agent.llm import ScriptedChatModel
from agent.runner import Run, build_context
from tools.errors import LineError


def say(concept: str, reasoning: str = "a guess") -> str:
    return json.dumps({"reasoning": reasoning, "concept": concept})


def run_units(settings, replies, units=(0,), run_id="t"):
    engine = build_engine(settings)
    chat = ScriptedChatModel(replies=replies)
    run = Run.create(settings, list(units), run_id)
    return run, chat, run.label(build_context(settings, engine, chat=chat))


def with_loop(settings, **loop):
    data = settings.model_dump()
    data["loop"].update(loop)
    return load_settings(**data)


def test_duplicates_and_plurals_are_never_rescored_and_the_llm_is_told(settings):
    settings = with_loop(settings, max_iterations=6, patience=10, duplicate_streak=5)
    replies = [say("red background"), say("Red Backgrounds"), say("blue stripes"), say("red backdrop"),
               say("blue stripe"), say("green circles"), say("red on black")]
    run, chat, states = run_units(settings, replies)
    state = states[0]
    concepts = [s.concept for s in state.steps]
    assert len(concepts) == len(set(concepts)), "a concept was scored twice"
    duplicates = [e for e in state.events if e.kind == "duplicate"]
    assert {e.concept for e in duplicates} >= {"red backgrounds", "blue stripe"}
    assert all(e.detail.split("|")[0] in concepts for e in duplicates)
    # the proposal after a duplicate tells the LLM which earlier concept it repeated
    second_prompt = chat.seen[2][-1].content
    assert 'repeats "red background"' in second_prompt
    assert state.label is not None and state.stop_reason.startswith("budget")


def test_red_unit_gets_a_red_label(settings):
    settings = with_loop(settings, max_iterations=4)
    replies = [say("blue stripes"), say("large red square"), say("red background"), say("green noise"), say("red")]
    _, _, states = run_units(settings, replies)
    label = states[0].label
    assert "red" in label.concept and label.scores.auc > 0.9
    llm_steps = [s for s in states[0].steps if s.source == "llm"]
    assert llm_steps and all(s.llm_calls == 1 and s.llm_tokens > 0 for s in llm_steps)


def test_stall_changes_strategy_then_stops(settings):
    settings = with_loop(settings, max_iterations=40, max_images=500, duplicate_streak=1, patience=1, summary=False)
    # after the initial pool, the LLM only repeats itself: every strategy gets its turn
    run, chat, states = run_units(settings, [say("red background")] + [say("red backgrounds")] * 50)
    state = states[0]
    changes = [e.detail.split(": ")[1] for e in state.events if e.kind == "strategy"]
    assert changes[:3] == ["refine -> explore", "explore -> combine", "combine -> contrast"]
    assert changes[-1].endswith("-> operators")
    assert state.stop_reason.startswith("stalled") or state.stop_reason.startswith("operators")
    assert any(s.source == "operator" for s in state.steps)
    assert sum(s.concept == "red background" for s in state.steps) == 1


def test_garbage_from_the_llm_is_counted_and_operators_take_over(settings):
    settings = with_loop(settings, max_iterations=5, failure_streak=2, summary=False)
    run, chat, states = run_units(settings, ["I like red!!", "", "{\"concept\": 42}"] * 20)
    state = states[0]
    assert state.usage.llm_failures >= 2 * (settings.llm.retries + 1)
    assert [e for e in state.events if e.kind == "llm_failure"]
    assert any(e.kind == "strategy" and e.detail.endswith("-> operators") for e in state.events)
    assert any(s.source == "operator" for s in state.steps) and state.label is not None


def test_crash_inside_a_node_then_resume_repeats_no_scored_step(settings):
    settings = with_loop(settings, max_iterations=4, summary=False)
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


def test_image_budget_stops_the_run(settings):
    settings = with_loop(settings, max_images=12, max_iterations=10, summary=False)
    _, _, states = run_units(settings, [say(c) for c in ("red background", "blue noise", "green circles", "white")])
    state = states[0]
    assert state.stop_reason == "budget: 12 images" and state.images_used() <= 12


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
    assert questions[0]["unit"] == 0 and questions[0]["label"] == waiting.best().concept
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
    assert len(run.states()[0].steps) == 3  # the initial pool is saved


def test_unusable_summary_falls_back_to_a_generalisation_and_shorter_labels_win_ties(settings):
    settings = with_loop(settings, max_iterations=2, label_tolerance=0.05)
    replies = [say("large red square on black"), say("red background"), "no idea, sorry"]
    _, _, states = run_units(settings, replies)
    state = states[0]
    summary = next(s for s in state.steps if s.source == "summary")
    assert summary.reasoning.startswith("generalise") and len(summary.concept.split()) < 5
    best = state.best().scores.auc
    close = [s for s in state.steps if s.scores.auc >= best - 0.05]
    assert len(state.label.concept.split()) == min(len(s.concept.split()) for s in close)


def test_the_paper_loop_neither_generalises_nor_prefers_short_labels(settings):
    from agent.config import LoopConfig

    paper = LoopConfig.paper().model_dump() | {"init_top": 2, "init_random": 1, "max_iterations": 2, "images_per_concept": 3}
    data = settings.model_dump()
    data["loop"] = paper
    _, _, states = run_units(load_settings(**data), [say("red background"), say("red background"), "garbage"])
    state = states[0]
    assert [s.concept for s in state.steps].count("red background") == 2  # no dedup in the paper's loop
    assert not any(s.source == "summary" for s in state.steps)
    assert state.label.concept == state.best().concept
