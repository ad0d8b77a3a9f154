"""`line chat`: the conversational graph with scripted LLMs on the colour net (unit 0 = redness)."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk
from rich.console import Console

from agent.runs import context as run_context
from agent.chat import STALL_NOTE, ChatAction, ChatSession, chat_context
from agent.ui.chat_repl import ConsolePrinter
from agent.ui.cli import build_parser
from agent.config import load_settings
from agent.llm import LLMUnavailable, ScriptedChatModel, message_text as text_of
from tools.agent_tools import ablate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_text_encoder(monkeypatch):
    """Dedup by words and scene only: loading the sentence encoder would cost seconds per test."""
    monkeypatch.setattr(run_context, "default_embedder", lambda: None)


def call(name: str, **args) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{name}"}])


def action(tool: str, **arguments) -> str:
    return json.dumps({"action": {"tool": tool, "arguments": arguments}})


def reply(text: str) -> str:
    return json.dumps({"action": {"tool": "reply", "reply": text}})


def settings_with(settings, **sections):
    data = settings.model_dump()
    for name, values in sections.items():
        data[name].update(values)
    return load_settings(**data)


def start(settings, engine, replies, unit=0) -> ChatSession:
    return ChatSession.start(settings, chat_context(settings, engine, ScriptedChatModel(replies=replies)), unit)


def tool_messages(messages) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


@pytest.fixture
def scripted(settings):
    return settings_with(settings, llm={"provider": "scripted"})


def test_conversation_runs_all_four_tools_then_resumes_in_a_new_process(scripted, engine):
    replies = [call("generate_images", concepts=["red background"], n=2), call("score_concept", concept="red background"),
               call("inspect_history", top=3), call("ablate_concept", concept="red"), "Unit 0 responds to red."]
    session = start(scripted, engine, replies)
    added = session.send("What does unit 0 respond to?")
    results = tool_messages(added)
    assert [m.name for m in results] == ["generate_images", "score_concept", "inspect_history", "ablate_concept"]
    assert all(m.status == "success" for m in results)
    assert "red background" in results[2].content and "not tried yet" in results[2].content
    assert added[-1].content.startswith("Unit 0 responds to red.\nBest so far: \"red background\" (MAD ")  # completed
    state = session.state()
    assert [(s.concept, s.source, s.iteration) for s in state.steps] == [("red background", "llm", 1)]
    assert state.steps[0].scores.auc > 0.9
    ablation = next(e for e in state.events if e.kind == "ablation")
    assert "scene 'red background'" in ablation.detail and ablation.detail.endswith("; removed")
    session.close()

    script = """
import json, sys
from langchain_core.messages import AIMessage
from agent.runs import context
context.default_embedder = lambda: None
from agent.chat import ChatSession, chat_context
from agent.llm import LLMUnavailable, ScriptedChatModel, message_text as text_of
from agent.runs.engine_factory import build_engine
from agent.runs.run import Run
run = Run.open(sys.argv[1], sys.argv[2])
before = ChatSession(run, None).state()
reply = AIMessage("", tool_calls=[{"name": "score_concept", "args": {"concept": "blue background"}, "id": "call-1"}])
context = chat_context(run.settings, build_engine(run.settings), ScriptedChatModel(replies=[reply, "Blue is weak."]))
session = ChatSession(run, context)
session.send("/score green background")
session.send("And blue?")
after = session.state()
print(json.dumps({"before": [s.concept for s in before.steps], "messages_before": len(before.messages),
                  "after": [[s.concept, s.source] for s in after.steps], "last": after.messages[-1].content}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, session.run.id, scripted.runs_dir],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] == ["red background"] and result["messages_before"] == len(state.messages)
    assert result["after"] == [["red background", "llm"], ["green background", "user"], ["blue background", "llm"]]
    assert result["last"].startswith("Blue is weak.")
    history = json.loads((session.run.folder / "history.json").read_text())
    assert [s["concept"] for s in history["units"]["0"]["steps"]] == ["red background", "green background",
                                                                     "blue background"]


def test_a_persons_repeat_is_served_from_history_and_the_llms_is_answered_with_a_new_concept(scripted, engine):
    session = start(scripted, engine, [call("score_concept", concept="red square"), "Noted."])
    session.send("/score red squares")
    generated = engine.cache.stats["images_generated"]
    served = tool_messages(session.send("/score Red Squares"))
    assert len(served) == 1 and "Served from the history" in served[0].content and "AUC" in served[0].content
    assert engine.cache.stats["images_generated"] == generated and len(session.state().steps) == 1
    answer = tool_messages(session.send("Try red square."))[0]
    state = session.state()
    assert [s.source for s in state.steps] == ["user", "operator"]
    assert 'repeats "red squares"' in answer.content and f'"{state.steps[1].concept}"' in answer.content
    assert [e.concept for e in state.events if e.kind == "duplicate"] == ["red squares", "red square"]
    assert state.iteration == 3  # every proposal counts, as in the autonomous loop


def test_an_agent_that_always_repeats_one_call_still_scores_a_new_concept_every_round(scripted, engine):
    scripted = settings_with(scripted, loop={"patience": 10, "duplicate_streak": 10})
    session = start(scripted, engine, [call("score_concept", concept="red stripes")])
    session.send("What does this neuron respond to? Try a few ideas.")
    state = session.state()
    concepts = [s.concept for s in state.steps]
    assert len(concepts) == len(set(concepts)) == session.context.max_rounds
    assert concepts[0] == "red stripes" and {s.source for s in state.steps[1:]} == {"operator"}
    assert state.messages[-1].content.startswith("(Stopped after")


def test_models_without_tool_calling_act_through_the_json_schema(settings, engine):
    replies = [action("score_concept", concept="green background"), "not json at all",
               action("score_concept", concept=["green"]), action("inspect_history", contains="green"),
               reply("Unit 1 likes green.")]
    settings = settings_with(settings, chat={"min_experiments": 0})
    chat = ScriptedChatModel(replies=replies)
    session = ChatSession.start(settings, chat_context(settings, engine, chat), unit=1)
    assert not session.context.tool_calling  # the configured provider is the embedded model
    added = session.send("Is it green?")
    assert [m.name for m in tool_messages(added)] == ["score_concept", "inspect_history"]
    assert added[-1].additional_kwargs["llm_reply"] == "Unit 1 likes green."  # the graph writes the answer
    assert added[-1].content.startswith('Best so far: "green background" (MAD ')
    state = session.state()
    assert [s.concept for s in state.steps] == ["green background"] and state.steps[0].scores.auc > 0.9
    assert state.usage.llm_calls == 5 and state.usage.llm_failures == 2  # prose, and a concept that is no text
    assert "unit" not in json.dumps(ChatAction.model_json_schema())  # actions study the neuron at hand
    seen = chat.seen[-1]
    assert "score_concept" in seen[0].content and any("[result of score_concept]" in m.content for m in seen)


def test_bad_arguments_come_back_as_errors_and_the_conversation_goes_on(scripted, engine):
    replies = [call("score_concept", concept="  "), call("score_concept", concept="red", unit=99),
               call("generate_images", concepts=["red"], n=500), call("paint", colour="red"),
               call("score_concept", concept="giraffe"), "Sorry, let me ask properly."]
    session = start(scripted, engine, replies)
    added = session.send("Go.")
    errors = tool_messages(added)
    assert [m.status for m in errors] == ["error"] * 5
    for message, words in zip(errors, ["empty", "unit 99", "less than or equal to 16", "paint", "cannot be drawn"]):
        assert words in message.content
    assert added[-1].content == "Sorry, let me ask properly." and session.state().steps == []
    refused = session.send("/score red @7")[-1]  # checked before anything is drawn
    assert refused.content.startswith("Not run: unit 7 is out of range") and len(session.state().steps) == 0


def test_a_stall_scores_the_next_operator_concept_and_says_so(scripted, engine):
    scripted = settings_with(scripted, loop={"duplicate_streak": 2})
    session = start(scripted, engine, ["unused"])
    for text in ("/score red background", "/score red backgrounds", "/score the red background"):
        added = session.send(text)
    note = next(m for m in added if isinstance(m, HumanMessage) and m.name == STALL_NOTE)
    state = session.state()
    substitute = state.steps[-1]
    assert substitute.source == "operator" and f'"{substitute.concept}"' in note.content
    assert "2 rejected proposals in a row" in note.content and "AUC" in note.content
    assert any(e.kind == "strategy" and e.strategy == "operators" for e in state.events)


def test_ablation_removes_only_what_drives_the_unit(engine):
    planted = ablate(engine, "red", "red background", unit=0)  # the unit's colour: it loses its drive
    assert planted.removed and planted.prompts_without[0] != planted.prompts_with[0]
    assert planted.drop_mean > 0.5 * sum(planted.with_concept) / len(planted.with_concept)
    for concept, scene in (("blue", "red background"), ("stripes", "red background")):  # not in the scene
        unrelated = ablate(engine, concept, scene, unit=0)
        assert not unrelated.removed and abs(unrelated.drop_mean) < 1e-6 and "did not remove" in unrelated.verdict


def test_chat_command_reads_input_and_resumes_a_thread(tmp_path, monkeypatch, capsys):
    config = tmp_path / "line.toml"
    config.write_text("[llm]\nprovider = 'scripted'\nscript = ['Red, I think.']\n[loop]\nsweep = false\nimages_per_concept = 3\n")
    parser = build_parser()
    base = ["--config", str(config), "--runs-dir", str(tmp_path / "runs")]
    typed = iter(["/score red background", "What now?", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    args = parser.parse_args(["chat", *base, "--model", "tests.colour_net:colour_net", "--layer", "relu",
                              "--control", "procedural:40", "--cache-dir", str(tmp_path / "c"), "--unit", "0"])
    args.func(args)
    out = " ".join(capsys.readouterr().out.split())  # undo the console's line wrapping
    assert "score_concept(concept='red background')" in out and "AUC" in out and "Red, I think." in out
    thread = out.split("line chat --thread ")[-1].split()[0]

    def end_of_input(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", end_of_input)
    args = parser.parse_args(["chat", *base, "--thread", thread])
    args.func(args)
    out = " ".join(capsys.readouterr().out.split())
    assert "1 concepts scored; best: red background" in out and f"--thread {thread}" in out

    args = parser.parse_args(["chat", *base, "--run", thread, "--unit", "0", "--trust-run"])  # any run: autonomous or chat
    args.func(args)
    out = " ".join(capsys.readouterr().out.split())
    copy = out.split("line chat --thread ")[-1].split()[0]
    assert copy != thread and "1 concepts scored; best: red background" in out


class StreamingModel(ScriptedChatModel):
    """Scripted replies streamed word by word, like a provider's token stream."""

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        for word in self._generate(messages).generations[0].message.content.split(" "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
            if run_manager:
                run_manager.on_llm_new_token(word + " ", chunk=chunk)
            yield chunk


def test_answers_stream_token_by_token(scripted, engine):
    console = Console(record=True, width=200)
    printer = ConsolePrinter(console, stream_tokens=True)
    context = chat_context(scripted, engine, StreamingModel(replies=["Unit zero likes red."]))
    session = ChatSession.start(scripted, context, 0)
    chunks = []
    session.send("Hi", lambda mode, chunk: (chunks.append(mode), printer(mode, chunk)))
    assert chunks.count("messages") >= 4
    assert console.export_text().count("Unit zero likes red.") == 1


def test_an_llm_that_does_not_answer_leaves_slash_commands_working(scripted, engine):
    session = start(scripted, engine, [ConnectionError("server down")])
    with pytest.raises(LLMUnavailable, match="slash commands work without it"):
        session.send("Hello?")
    session.send("/score red background")
    assert [s.source for s in session.state().steps] == ["user"]


def test_the_embedded_model_experiments_before_it_may_answer(settings, engine):
    settings = settings_with(settings, chat={"min_experiments": 2})
    replies = [reply("Too early."), action("score_concept", concept="green background"), reply("Still early."),
               action("score_concept", concept="blue background"), reply("Green and blue both.")]
    session = ChatSession.start(settings, chat_context(settings, engine, ScriptedChatModel(replies=replies)), unit=1)
    added = session.send("What does it like?")
    assert [s.concept for s in session.state().steps] == ["green background", "blue background"]
    assert added[-1].additional_kwargs["llm_reply"] == "Green and blue both."  # the replies before two experiments were refused
    assert "This turn scored 2 new concepts" in added[-1].content


# --- answers grounded in the history (issue 24) ------------------------------------------------
def grounding_of(session):
    from agent.chat.answer import Grounding
    from tools.generators.base import slot_reader

    return Grounding.of(session.state(), slot_reader(session.context.engine.generator))


def test_an_answer_stating_a_number_or_concept_the_history_lacks_is_replaced(scripted, engine):
    from agent.chat.answer import problems

    session = start(scripted, engine, [call("score_concept", concept="red background"),
                                       "Red background scores AUC 0.93, and 'green stripes' even more."])
    answer = session.send("What does it respond to?")[-1]
    assert answer.additional_kwargs["replaced"].startswith("Red background scores AUC 0.93")
    assert "0.93" in answer.additional_kwargs["problems"][0] and "'green stripes'" in answer.additional_kwargs["problems"][1]
    step = session.state().steps[0]
    assert f'"red background" (MAD {step.scores.mad:.2f}, AUC {step.scores.auc:.3f}, 3 images)' in answer.content
    assert "set aside: it states 0.93" in answer.content
    assert problems(answer.content.split("\n(The agent")[0], grounding_of(session), []) == []  # the replacement is grounded


def test_a_grounded_answer_is_kept_and_an_empty_or_repeated_one_is_not(scripted, engine):
    session = start(scripted, engine, [call("score_concept", concept="red background"), "PLACEHOLDER"])
    auc = None

    def say(text):
        session.context.chat.replies[-1] = text
        return session.send("And?")[-1]

    session.context.chat.replies[-1] = "Scoring first."
    first = session.send("What does it respond to?")[-1]
    auc = session.state().steps[0].scores.auc
    assert first.content.startswith("Scoring first.\nBest so far:")  # kept, completed with a scored concept
    kept = say(f"It fires for red background: AUC {auc:.2f}, on 3 images.")
    assert kept.content == f"It fires for red background: AUC {auc:.2f}, on 3 images." and kept.name != "line"
    assert "repeats an earlier answer" in say(kept.content).additional_kwargs["problems"][0]
    assert say("").additional_kwargs["problems"] == ["it is empty"]
    looping = say("Red is it. Red is it. Red is it.")
    assert "it repeats itself" in looping.additional_kwargs["problems"]


def test_the_groundedness_rule_checks_numbers_at_their_precision_and_named_concepts(scripted, engine):
    from agent.chat.answer import problems

    session = start(scripted, engine, ["unused"])
    session.send("/score red background")
    grounding, s = grounding_of(session), session.state().steps[0].scores
    assert problems(f"AUC {s.auc:.3f}, MAD {s.mad:.1f}, {s.auc:.1%} of it, unit 0, 3 images.", grounding, []) == []
    assert problems("The red one wins; a small effect of size.", grounding, []) == []
    assert problems(f"AUC {s.auc - 0.05:.3f}.", grounding, [])[0].startswith(f"it states {s.auc - 0.05:.3f}")
    assert problems(f"MAD {s.mad + 1:.2f}.", grounding, [])  # a number near none the history holds
    assert "'green stripes'" in problems("Green stripes fire too.", grounding, [])[0]
    assert "'blue circles'" in problems('"blue circles" fire too.', grounding, [])[0]


def test_a_turn_stopped_on_its_budget_says_what_was_found_so_far(scripted, engine):
    scripted = settings_with(scripted, chat={"max_rounds": 2})
    session = start(scripted, engine, [call("score_concept", concept="red background"),
                                       call("score_concept", concept="green background"),
                                       call("score_concept", concept="blue background")])
    answer = session.send("Try colours.")[-1]
    assert answer.content.startswith("(Stopped after 2 tool rounds of new work; ask again to continue.) What was "
                                     'found so far: Best so far: "')
    assert re.search(r"This turn scored \d+ new concepts", answer.content)


QUESTIONS = ["What does this neuron respond to?", "Does the colour matter here?", "Is it about the pattern at all?",
             "Would a different size change anything?", "And is it the background? Test it.",
             "Which attribute matters most, colour or pattern?"]
ATTRIBUTE_OF = {1: ["colour"], 2: ["pattern"], 3: ["size"], 4: ["background"], 5: ["colour", "pattern"]}


@pytest.mark.parametrize("unit", [0, 1])
def test_a_scripted_investigation_answers_every_question_from_the_history(settings, engine, unit):
    """The embedded model's path (JSON actions) with a weak scripted LLM that repeats
    itself: every turn ends with an answer that names a scored concept with its stored
    scores, every attribute question gets a new experiment on that attribute, and every
    number an answer states is in the history."""
    from agent.chat.answer import problems

    colour = ["red", "green"][unit]
    replies = [action("score_concept", concept=f"{colour} polka dots"), action("score_concept", concept=f"{colour} polka dots"),
               action("inspect_history"), reply("It is red, AUC 0.99!")]
    session = ChatSession.start(settings, chat_context(settings, engine, ScriptedChatModel(replies=replies)), unit)
    for i, question in enumerate(QUESTIONS):
        before = session.state()
        added = session.send(question)
        after, answer = session.state(), added[-1]
        assert isinstance(answer, AIMessage) and not answer.tool_calls and answer.content.strip()
        named = [s for s in after.steps if f'"{s.concept}" (MAD {s.scores.mad:.2f}, AUC {s.scores.auc:.3f}' in answer.content]
        assert named, answer.content
        assert problems(answer.content, grounding_of(session), []) == [], answer.content
        for attribute in ATTRIBUTE_OF.get(i, []):
            assert f"The {attribute}, tested on" in answer.content, answer.content
        if i in ATTRIBUTE_OF:
            new_work = len(after.steps) - len(before.steps) + len(after.events) - len(before.events)
            assert new_work > 0 and any(m.tool_call_id.startswith("probe-") for m in tool_messages(added))


@pytest.mark.parametrize("verbose", [False, True])
def test_a_repeated_call_is_shown_once_with_a_count_and_verbose_shows_every_one(scripted, engine, verbose):
    scripted = settings_with(scripted, loop={"patience": 10, "duplicate_streak": 10}, chat={"max_rounds": 4})
    console = Console(record=True, width=400)
    printer = ConsolePrinter(console, stream_tokens=False, verbose=verbose)
    session = start(scripted, engine, [call("score_concept", concept="red stripes")])
    session.send("What does it respond to?", printer)
    printer.end_turn()
    out = console.export_text()
    calls = out.count("-> score_concept(concept='red stripes')")
    if verbose:
        assert calls == 4 and "Served" not in out and out.count("The stall detector scored an untried concept") == 3
    else:
        assert calls == 1 and "asked score_concept(concept='red stripes') 4 times" in out and "3 scored, best" in out
        results = [line for line in out.splitlines() if line.startswith(("  <-", "  stall:"))]
        assert results and all(len(line) < 260 for line in results)  # one short line per result
    assert "line> (Stopped after 4 tool rounds" in out and 'Best so far: "' in out


def test_the_loops_llm_call_budget_does_not_make_every_chat_round_a_stall(scripted, engine):
    """A thread outlives the autonomous loop's LLM call budget: once spent, it must not
    trigger a stall (and an operator concept) on every round."""
    scripted = settings_with(scripted, loop={"max_llm_calls": 2, "patience": 10, "duplicate_streak": 10})
    concepts = ["red background", "blue background", "green background", "red stripes"]
    session = start(scripted, engine, [call("score_concept", concept=c) for c in concepts] + ["Red it is."])
    added = session.send("What does unit 0 respond to?")
    assert [s.concept for s in session.state().steps] == concepts  # the LLM's four, no operator in between
    assert not any("budget" in text_of(m) for m in added)
    session.close()
