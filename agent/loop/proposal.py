"""What the LLM is asked and must answer: the answer schema, the prompt's parts, and the
LLM's proposal (a `Proposal`, or the typed event of a failed call)."""

from __future__ import annotations

import re
from functools import lru_cache

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

import prompts
from agent.llm import StructuredReply, ask_structured
from agent.loop.context import LineContext
from agent.loop.state import NeuronState, Proposal
from tools.criterion import Criterion
from tools.generators.base import ImageGenerator
from tools.history import Event, Step

CONNECTIVES = ("on", "and", "with", "background")


class ConceptAnswer(BaseModel):
    """What the LLM must answer: one concept, then a short reason.

    The concept comes first so that an answer cut at the token cap still holds it. No
    length limits in the schema: llama.cpp turns them into grammars that crawl.
    """

    model_config = ConfigDict(extra="forbid")
    concept: str = Field(pattern=r"^[A-Za-z][A-Za-z'-]*( [A-Za-z][A-Za-z'-]*){0,5}$")
    reasoning: str = ""

    @field_validator("concept", mode="before")
    @classmethod
    def _tidy(cls, value: object) -> object:
        return " ".join(value.lower().split()) if isinstance(value, str) else value


@lru_cache(maxsize=8)
def answer_schema(words: tuple[str, ...]) -> type[ConceptAnswer]:
    """`ConceptAnswer`, restricted to `words` (plural or singular) when the generator has a
    closed vocabulary. Grammar-constrained providers then cannot answer with anything the
    generator cannot draw, which keeps even a 135M-parameter model useful."""
    if not words:
        return ConceptAnswer
    forms = {w.removesuffix("s") if len(w) > 3 else w for w in (*words, *CONNECTIVES)} | {*words, *CONNECTIVES}
    plain = sorted((w for w in forms if re.fullmatch(r"[a-z]+( [a-z]+)*", w)), key=len, reverse=True)
    alternatives = "|".join(plain)  # no escapes: llama.cpp's grammar converter rejects them
    return create_model("ConceptAnswer", __base__=ConceptAnswer,
                        concept=(str, Field(pattern=rf"^({alternatives})s?( ({alternatives})s?)*$")))


def generator_answer_schema(generator: ImageGenerator) -> type[ConceptAnswer]:
    """The answer schema for `generator`'s vocabulary (open vocabularies: any words)."""
    return answer_schema(tuple(w for words in generator.vocabulary().values() for w in words))


def pool_lines(steps: list[Step], criterion: Criterion) -> str:
    """`concept: AUC …, MAD …` lines, best first by the criterion."""
    return "\n".join(f"{s.concept}: AUC {s.scores.auc:.3f}, MAD {s.scores.mad:.2f}"
                     for s in criterion.order(steps, lambda s: s.scores))


def vocabulary_hint(generator: ImageGenerator) -> str:
    """The generator's words for the LLM's prompt ("" for open-vocabulary generators)."""
    vocabulary = generator.vocabulary()
    if not vocabulary:
        return ""
    words = "\n".join(f"- {category}: {', '.join(words)}" for category, words in vocabulary.items())
    return prompts.render("vocabulary", words=words)


def feedback(state: NeuronState) -> str:
    """What the LLM should know about its proposal rejected in this iteration."""
    last = state.events[-1] if state.events else None
    if last is None or last.iteration != state.iteration or last.source != "llm":
        return ""
    if last.kind == "duplicate":
        return prompts.render("feedback_duplicate", concept=last.concept, earlier=last.duplicate_of, reason=last.reason)
    if last.kind == "undrawable":
        return prompts.render("feedback_undrawable", concept=last.concept, reason=last.reason)
    return ""


def failure_event(iteration: int, source: str, reply: StructuredReply) -> Event:
    """The typed event of an LLM call that gave nothing usable."""
    return Event(iteration=iteration, kind="llm_failure", source=source, reason=" / ".join(reply.failures)[:500])


def ask_for_concept(ctx: LineContext, user: str, temperature: float, seconds: float | None = None) -> StructuredReply:
    """One structured LLM call: the system prompt, `user`, the generator's answer schema;
    `seconds`: what is left of the unit's time budget (no request waits longer)."""
    return ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                          generator_answer_schema(ctx.engine.generator), temperature=temperature,
                          retries=ctx.llm_retries, seconds=seconds)


def proposal_of(reply: StructuredReply, source: str, iteration: int, strategy: str) -> Proposal:
    """The `Proposal` of a usable reply, with its cost."""
    return Proposal(concept=reply.value.concept, source=source, iteration=iteration, reasoning=reply.value.reasoning,
                    strategy=strategy, llm_calls=reply.attempts, llm_tokens=reply.input_tokens + reply.output_tokens)
