"""The chat's doors under bad input and broken providers: one clear line, nothing lost
(issue 21: probes 2, 7, 12, 23, 24)."""

import json

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from agent.runs import context as run_context
from agent.chat import ChatSession, chat_context
from agent.config import load_settings
from agent.llm import ScriptedChatModel, ask_structured, make_chat_model
from agent.loop.proposal import ConceptAnswer
from evals.fake_openai import FakeOpenAI
from tests.helpers import COLOUR_NET, line


@pytest.fixture(autouse=True)
def no_text_encoder(monkeypatch):
    monkeypatch.setattr(run_context, "default_embedder", lambda: None)


def with_llm(settings, **llm):
    data = settings.model_dump()
    data["llm"].update(llm)
    return load_settings(**data)


def scripted_session(settings, engine, replies, unit=0) -> ChatSession:
    settings = with_llm(settings, provider="scripted")
    return ChatSession.start(settings, chat_context(settings, engine, ScriptedChatModel(replies=replies)), unit)


def test_a_stream_that_holds_only_done_is_a_failed_reply_and_the_turn_ends_with_an_answer(settings, engine):
    with FakeOpenAI("done") as server:
        settings = with_llm(settings, provider="openai-compatible", base_url=server.url, retries=0, timeout=5)
        session = ChatSession.start(settings, chat_context(settings, engine), 0)
        session.send("/score red background")
        added = session.send("What does it respond to?")
    failure, answer = added[-2], added[-1]
    assert failure.content.startswith("(The LLM failed: ValueError: No generations found in stream")
    assert answer.name == "line" and answer.content.startswith('Best so far: "red background" (MAD ')
    state = session.state()
    assert state.usage.llm_failures == 1 and [s.concept for s in state.steps] == ["red background"]


def test_a_seed_beyond_64_bits_is_refused_as_an_argument_and_the_thread_keeps_its_checkpoints(settings, engine):
    huge = AIMessage("", tool_calls=[{"name": "generate_images", "args": {"concepts": ["red"], "seeds": [2**70]},
                                      "id": "call-huge"}])
    session = scripted_session(settings, engine, [huge, "Nothing drawn."])
    added = session.send("Draw red with a big seed.")
    error = next(m for m in added if isinstance(m, ToolMessage))
    assert error.status == "error" and "seeds" in error.content, added
    assert session.send("/score red background")[-1].status == "success"  # the thread goes on, checkpointed
    assert str(2**70) in json.dumps([m.tool_calls for m in session.state().messages if isinstance(m, AIMessage)])


def test_a_unit_outside_the_layer_is_refused_at_every_chat_door(settings, engine, tmp_path, capsys):
    session = scripted_session(settings, engine, [AIMessage("", tool_calls=[
        {"name": "score_concept", "args": {"concept": "red", "unit": -1}, "id": "call-1"}]), "Sorry."])
    refused = session.send("/score red @-1")[-1]
    assert refused.content == "Not run: unit -1 is out of range for layer relu (4 units: 0..3). Pick a unit between 0 and 3."
    assert session.send("/score red @x")[-1].content.startswith("Not run: unit 'x' after @ is not a number.")
    tool = next(m for m in session.send("Compare unit -1.") if isinstance(m, ToolMessage))
    assert tool.status == "error" and "unit -1" in tool.content and "out of range" in tool.content
    assert session.state().steps == [] and not any("@" in e.concept for e in session.state().events)

    code, out, err = line(capsys, "chat", "--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40",
                          "--cache-dir", tmp_path / "c", "--runs-dir", tmp_path / "runs", "--unit", "-1")
    assert code == 2 and err.count("\n") == 1 and "unit -1 is out of range" in err and "Pick a unit" in err


def test_a_labelling_run_and_a_chat_thread_refuse_each_others_doors(settings, engine, tmp_path, capsys):
    config = tmp_path / "line.toml"
    config.write_text("[llm]\nprovider = 'scripted'\nscript = ['{\"concept\": \"red background\"}']\n[loop]\n"
                      "images_per_concept = 2\ninit_top = 1\ninit_random = 0\nbank_top = 0\nmax_iterations = 1\n"
                      "sweep = false\n")
    runs = tmp_path / "runs"
    common = ["--config", config, "--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40",
              "--cache-dir", tmp_path / "c", "--runs-dir", runs]
    assert line(capsys, "label", *common, "--run-id", "lab", "--units", "0")[0] == 0
    code, _, err = line(capsys, "chat", "--thread", "lab", "--runs-dir", runs)
    assert code == 2 and err.count("\n") == 1 and "lab is a labelling run" in err and "line chat --run lab" in err

    session = scripted_session(settings.model_copy(update={"runs_dir": str(runs)}), engine, ["hi"])
    session.close()
    code, _, err = line(capsys, "label", "--resume", session.run.id, "--runs-dir", runs)
    assert code == 2 and err.count("\n") == 1 and "is a chat thread" in err and f"line chat --thread {session.run.id}" in err


def test_an_ablation_from_a_scene_the_generator_cannot_draw_is_refused(settings, engine):
    session = scripted_session(settings, engine, ["unused"])
    result = session.send("/ablate red from nowhere land")[-1]
    assert result.status == "error" and "the scene 'nowhere land' cannot be drawn" in result.content
    assert "can draw nothing of it" in result.content
    assert not any(e.kind == "ablation" for e in session.state().events)


def test_a_reply_whose_content_is_a_list_of_text_parts_is_read(settings):
    with FakeOpenAI("parts", reply='{"concept": "red stripes", "reasoning": "red"}') as server:
        chat = make_chat_model(with_llm(settings, provider="openai-compatible", base_url=server.url, retries=0).llm)
        reply = ask_structured(chat, [("user", "One concept.")], ConceptAnswer, retries=0)
    assert reply.value is not None and reply.value.concept == "red stripes" and reply.failures == []
