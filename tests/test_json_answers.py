"""Structured answers from weak models: JSON fenced, after prose, or cut at the token cap."""

import json

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from agent.llm import ScriptedChatModel, ask_structured, parse_json_object

ANSWER = {"reasoning": "red scores highest", "concept": "red stripes"}
TEXT = json.dumps(ANSWER)


@pytest.mark.parametrize("text", [
    TEXT,
    f"```json\n{TEXT}\n```",
    f"```\n{TEXT}\n```\nThat is my answer.",
    f"Sure! Here is my proposal: {TEXT}",
    f"Here it is:\n```json\n{TEXT}\n```",
    f"{TEXT} I hope this helps, {{it}} is \"red\".",
    f"I keep {{braces}} in prose, then: {TEXT}",
], ids=["plain", "fenced", "fenced-then-prose", "after-prose", "prose-then-fence", "then-prose", "braces-in-prose"])
def test_the_first_json_object_is_found(text):
    assert parse_json_object(text) == ANSWER


@pytest.mark.parametrize("text, expected", [
    ('{"reasoning": "red scores highest", "concept": "red str', {**ANSWER, "concept": "red str"}),
    ('Answer: {"reasoning": "red scores", "concept": "red stripes', {**ANSWER, "reasoning": "red scores"}),
    ('{"action": {"tool": "score", "args": {"concept": "blue', {"action": {"tool": "score", "args": {"concept": "blue"}}}),
])
def test_an_answer_cut_short_is_closed(text, expected):
    assert parse_json_object(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "a list [1, 2]", "[{}]"])
def test_no_object_is_a_value_error(text):
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object(text)


class Answer(BaseModel):
    reasoning: str
    concept: str


def test_ask_structured_parses_what_a_weak_model_writes_and_counts_what_it_cannot():
    chat = ScriptedChatModel(replies=["I cannot decide.", f"Well:\n```json\n{TEXT[:-3]}"])
    reply = ask_structured(chat, [HumanMessage("propose a concept")], Answer, retries=2)
    assert reply.value == Answer(reasoning="red scores highest", concept="red stripe")
    assert reply.attempts == 2 and len(reply.failures) == 1 and "unusable answer" in reply.failures[0]
