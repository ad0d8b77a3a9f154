"""The embedded LLM for real: SmolLM2-135M served in-process by llama.cpp (xllamacpp)."""

import urllib.request

from langchain_core.messages import HumanMessage, SystemMessage

import prompts
from agent.config import LLMConfig
from agent.llm import ask_structured, local_server, make_chat_model
from agent.loop.proposal import answer_schema
from tools.generators.procedural import ProceduralGenerator


def test_the_embedded_model_answers_in_the_generators_words():
    config = LLMConfig(max_tokens=96)
    with urllib.request.urlopen(local_server(config).url + "/health", timeout=5) as response:
        assert response.status == 200
    vocabulary = ProceduralGenerator().vocabulary()
    schema = answer_schema(tuple(w for words in vocabulary.values() for w in words))
    user = prompts.render("propose_user", pool="red stripes: AUC 0.910, MAD 3.10\nblue noise: AUC 0.420, MAD -0.20",
                          tried="red stripes, blue noise",
                          vocabulary="", strategy=prompts.text("strategies/refine").strip(), feedback="")
    reply = ask_structured(make_chat_model(config), [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                           schema, temperature=0.2, retries=2)
    assert reply.value is not None, reply.failures
    words = {w.removesuffix("s") for words in vocabulary.values() for phrase in words for w in phrase.split()}
    answer = {w.removesuffix("s") for w in reply.value.concept.split()}
    assert answer <= words | {"on", "and", "with", "background"}, reply.value.concept  # only the generator's words
    assert reply.output_tokens > 0
