"""The nodes of the labelling graph. Each has one job and returns a state update.

Heavy objects come from the runtime context (`LineContext`); the state holds history only.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

import prompts
from agent import operators
from agent.config import LoopConfig
from agent.dedup import Deduplicator
from agent.llm import ask_structured
from agent.state import Label, NeuronState, Proposal, Usage
from tools.engine import Engine
from tools.generators.base import ImageGenerator
from tools.history import Event, Step, score_step
from tools.polysemantic import analyse
from tools.text import default_embedder

STRATEGIES = ["refine", "explore", "combine", "contrast", "hot", "operators"]
HOT_TEMPERATURE_BOOST = 0.5


@dataclass
class LineContext:
    """Everything heavy a run needs; never checkpointed."""

    engine: Engine
    dedup: Deduplicator
    loop: LoopConfig
    chat: BaseChatModel | None = None
    temperature: float = 0.7
    llm_retries: int = 2


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


CONNECTIVES = ("on", "and", "with", "background")


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


def _answer_schema(ctx: "LineContext") -> type[ConceptAnswer]:
    vocabulary = ctx.engine.generator.vocabulary()
    return answer_schema(tuple(w for words in vocabulary.values() for w in words))


# --- helpers shared by nodes ---------------------------------------------------------------
def _rng(ctx: LineContext, state: NeuronState, salt: int = 0) -> random.Random:
    return random.Random(ctx.loop.seed * 1_000_003 + state.unit * 7_919 + state.iteration * 31 + salt)


def _pool_lines(state: NeuronState, concepts: list[str]) -> str:
    steps = sorted((state.step(c) for c in concepts), key=lambda s: -s.scores.auc)
    return "\n".join(f"{s.concept}: {s.scores.auc:.3f}" for s in steps)


def _feedback(state: NeuronState) -> str:
    """What the LLM should know about its last rejected proposal."""
    last = state.events[-1] if state.events else None
    if last is None or last.iteration != state.iteration:
        return ""
    if last.kind == "duplicate":
        earlier, _, reason = last.detail.partition("|")
        return prompts.render("feedback_duplicate", concept=last.concept, earlier=earlier, reason=reason)
    if last.kind == "undrawable":
        return prompts.render("feedback_undrawable", concept=last.concept, reason=last.detail)
    return ""


def vocabulary_hint(generator: ImageGenerator) -> str:
    """The generator's words for the LLM's prompt ("" for open-vocabulary generators)."""
    vocabulary = generator.vocabulary()
    if not vocabulary:
        return ""
    words = "\n".join(f"- {category}: {', '.join(words)}" for category, words in vocabulary.items())
    return prompts.render("vocabulary", words=words)


# --- nodes --------------------------------------------------------------------------------
def init(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """LINE's initial pool: top control classes for the unit, random ones, and the bank's best."""
    if state.steps:
        return {}
    ctx, start = runtime.context, time.perf_counter()
    classes, means = ctx.engine.class_means()
    drawable = [c for c in (classes[i] for i in np.argsort(-means[:, state.unit], kind="stable"))
                if ctx.engine.generator.interpret(c).drawable]
    top = drawable[: ctx.loop.init_top]
    rest = [c for c in drawable if c not in top]
    chosen = top + _rng(ctx, state).sample(rest, min(ctx.loop.init_random, len(rest)))
    steps = [score_step(ctx.engine, state.unit, c, "init", 0) for c in chosen]
    for concept, _ in ctx.engine.bank_best(state.unit, ctx.loop.bank_top, exclude=chosen):
        steps.append(score_step(ctx.engine, state.unit, concept, "bank", 0))
    ranked = sorted(steps, key=lambda s: -s.scores.auc)
    return {"steps": steps, "pool": [s.concept for s in ranked[: ctx.loop.pool_size]],
            "strategy": "refine" if ctx.chat is not None else "operators",
            "elapsed": time.perf_counter() - start}


def propose(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """One new concept: from the LLM under the current strategy, or from operators."""
    ctx, start = runtime.context, time.perf_counter()
    iteration = state.iteration + 1
    if state.strategy == "operators":
        return _propose_by_operators(ctx, state, iteration, start)
    user = prompts.render(
        "propose_user", pool=_pool_lines(state, state.pool), tried=", ".join(state.tried()),
        vocabulary=vocabulary_hint(ctx.engine.generator), strategy=prompts.text(f"strategies/{state.strategy}").strip(),
        feedback=_feedback(state),
    )
    temperature = ctx.temperature + (HOT_TEMPERATURE_BOOST if state.strategy == "hot" else 0.0)
    reply = ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                           _answer_schema(ctx), temperature=temperature, retries=ctx.llm_retries)
    update = {"iteration": iteration, "elapsed": time.perf_counter() - start, "usage": _usage(reply)}
    if reply.value is None:
        return update | {"proposal": None, "events": [
            Event(iteration=iteration, kind="llm_failure", detail=" / ".join(reply.failures)[:500])]}
    return update | {"proposal": Proposal(concept=reply.value.concept, source="llm", reasoning=reply.value.reasoning,
                                          strategy=state.strategy, llm_calls=reply.attempts,
                                          llm_tokens=reply.input_tokens + reply.output_tokens)}


def _propose_by_operators(ctx: LineContext, state: NeuronState, iteration: int, start: float) -> dict:
    ranked = [s.concept for s in state.ranked()]
    tried = state.tried()
    for concept, how in operators.candidates(ranked, ctx.engine.generator.vocabulary(), _rng(ctx, state)):
        if _fully_drawn(ctx, concept) and ctx.dedup.check(concept, tried).accepted:
            return {"iteration": iteration, "elapsed": time.perf_counter() - start,
                    "proposal": Proposal(concept=concept, source="operator", reasoning=how, strategy="operators")}
    return {"iteration": iteration, "proposal": None, "stop_reason": "operators found no new concept",
            "events": [Event(iteration=iteration, kind="stop", detail="operators found no new concept")]}


def dedup(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Drop a proposal already tried (words, scene or meaning) or one that cannot be drawn."""
    proposal = state.proposal
    rejection = _rejection(runtime.context, state, proposal.concept, state.iteration) if proposal else None
    return {} if rejection is None else {"proposal": None, "events": [rejection]}


def evaluate(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Score the proposal, add it to the history, and update the pool by LINE's rule."""
    ctx, proposal = runtime.context, state.proposal
    step = score_step(ctx.engine, state.unit, proposal.concept, proposal.source, state.iteration,
                      proposal.reasoning, proposal.strategy)
    step = step.model_copy(update={"llm_calls": proposal.llm_calls, "llm_tokens": proposal.llm_tokens})
    return {"steps": [step], "proposal": None, "pool": _updated_pool(ctx, state, step),
            "elapsed": step.seconds}


def _updated_pool(ctx: LineContext, state: NeuronState, step: Step) -> list[str]:
    """A better concept evicts the worst; a worse one evicts a random entry but the best."""
    pool = list(state.pool)
    if len(pool) < ctx.loop.pool_size:
        return pool + [step.concept]
    scored = sorted(pool, key=lambda c: state.step(c).scores.auc)
    if step.scores.auc > state.step(scored[0]).scores.auc:
        victim = scored[0]
    else:
        victim = _rng(ctx, state, salt=1).choice(scored[:-1])
    return [step.concept if c == victim else c for c in pool]


def stall(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Stop on a spent budget; on a stall change strategy, and stop only when none is left."""
    ctx = runtime.context
    if state.stop_reason:
        return {}
    reason = budget_spent(state, ctx.loop)
    if reason:
        return {"stop_reason": reason, "events": [Event(iteration=state.iteration, kind="stop", detail=reason)]}
    if not ctx.loop.stall:
        return {}
    trigger, failing = stall_trigger(state, ctx.loop)
    if trigger is None:
        return {}
    following = "operators" if failing else next_strategy(state.strategy)
    if following is None or following == state.strategy:
        reason = f"stalled: {trigger}, and every strategy was tried"
        return {"stop_reason": reason, "events": [Event(iteration=state.iteration, kind="stop", detail=reason)]}
    return {"strategy": following, "events": [Event(
        iteration=state.iteration, kind="strategy", detail=f"{trigger}: {state.strategy} -> {following}")]}


def budget_spent(state: NeuronState, loop: LoopConfig) -> str | None:
    if state.iteration >= loop.max_iterations:
        return f"budget: {loop.max_iterations} iterations"
    if state.images_used() + loop.images_per_concept > loop.max_images:
        return f"budget: {loop.max_images} images"
    if state.usage.llm_calls >= loop.max_llm_calls and state.strategy != "operators":
        return f"budget: {loop.max_llm_calls} LLM calls"
    if state.elapsed >= loop.max_seconds:
        return f"budget: {loop.max_seconds:.0f} seconds"
    return None


def outcomes(state: NeuronState) -> list[str]:
    """What each iteration since the last strategy change gave, oldest first: 'new best',
    'scored', or the kind of rejection."""
    since = max((e.iteration for e in state.events if e.kind == "strategy"), default=0)
    best_so_far = max((s.scores.auc for s in state.steps if s.iteration <= since), default=-1.0)
    result = []
    for iteration in range(since + 1, state.iteration + 1):
        step = next((s for s in state.steps if s.iteration == iteration and s.source != "summary"), None)
        if step is not None:
            result.append("new best" if step.scores.auc > best_so_far else "scored")
            best_so_far = max(best_so_far, step.scores.auc)
            continue
        rejection = next((e.kind for e in state.events if e.iteration == iteration
                          and e.kind in ("duplicate", "undrawable", "llm_failure")), "none")
        result.append(rejection)
    return result


def stall_trigger(state: NeuronState, loop: LoopConfig) -> tuple[str | None, bool]:
    """(why the search is stalled or None, whether the LLM itself keeps failing)."""
    history = outcomes(state)

    def streak(kinds: set[str]) -> int:
        n = 0
        for outcome in reversed(history):
            if outcome not in kinds:
                break
            n += 1
        return n

    failures = streak({"llm_failure", "undrawable"})
    if failures >= loop.failure_streak:
        return f"{failures} unusable or undrawable LLM answers in a row", True
    duplicates = streak({"duplicate", "undrawable"})
    if duplicates >= loop.duplicate_streak:
        return f"{duplicates} rejected proposals in a row", False
    without_gain = streak({"scored", "duplicate", "undrawable", "llm_failure", "none"})
    if without_gain >= loop.patience:
        return f"no new best in {without_gain} iterations", False
    return None, False


def next_strategy(current: str) -> str | None:
    index = STRATEGIES.index(current) if current in STRATEGIES else -1
    return STRATEGIES[index + 1] if index + 1 < len(STRATEGIES) else None


def summarize(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """LINE's summary iteration: merge the three best concepts into a more general one.
    Where the LLM gives nothing usable or new, and `loop.simplify` is on, the best concept
    is generalised by operators (a word dropped) instead."""
    ctx = runtime.context
    top = state.ranked()[:3]
    if not ctx.loop.summary or len(top) < 2 or any(s.source == "summary" for s in state.steps):
        return {}
    start, iteration = time.perf_counter(), state.iteration + 1
    update: dict = {"events": []}
    concept, reasoning = None, ""
    if ctx.chat is not None:
        reply = _ask_summary(ctx, top)
        update["usage"] = _usage(reply)
        if reply.value is None:
            update["events"].append(Event(iteration=iteration, kind="llm_failure",
                                          detail="summary: " + " / ".join(reply.failures)[:400]))
        else:
            concept, reasoning = reply.value.concept, reply.value.reasoning
            rejection = _rejection(ctx, state, concept, iteration)
            if rejection is not None:
                update["events"].append(rejection)
                concept = None
    if concept is None and ctx.loop.simplify:
        concept, reasoning = _generalisation(ctx, state, top[0].concept)
    if concept is not None:
        update["steps"] = [score_step(ctx.engine, state.unit, concept, "summary", iteration, reasoning, "summary")]
    return update | {"elapsed": time.perf_counter() - start}


def _ask_summary(ctx: LineContext, top: list[Step]):
    user = prompts.render("summarize_user", top="\n".join(f"{s.concept}: {s.scores.auc:.3f}" for s in top))
    return ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                          _answer_schema(ctx), temperature=ctx.temperature, retries=ctx.llm_retries)


def _usage(reply) -> Usage:
    return reply.usage()


def _rejection(ctx: LineContext, state: NeuronState, concept: str, iteration: int) -> Event | None:
    """The event recording why `concept` is not scored, or None when it is new and drawable."""
    if not ctx.loop.dedup:
        return None
    verdict = ctx.dedup.check(concept, state.tried())
    if verdict.accepted:
        return None
    if verdict.undrawable:
        return Event(iteration=iteration, kind="undrawable", concept=concept, detail=verdict.reason)
    return Event(iteration=iteration, kind="duplicate", concept=concept, detail=f"{verdict.duplicate_of}|{verdict.reason}")


def _generalisation(ctx: LineContext, state: NeuronState, best: str) -> tuple[str | None, str]:
    """The first shorter form of `best` not tried yet."""
    for concept, how in operators.generalisations(best):
        if _fully_drawn(ctx, concept) and ctx.dedup.check(concept, state.tried()).accepted:
            return concept, how
    return None, ""


def _fully_drawn(ctx: LineContext, concept: str) -> bool:
    """Whether the generator draws every word of `concept` (operators must not make labels
    with words the images ignore)."""
    return not ctx.engine.generator.interpret(concept).ignored


def review(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Optionally pause for a person: approve the label or give a concept of their own."""
    ctx = runtime.context
    if not ctx.loop.review or state.verdict is not None:
        return {}
    best = state.best()
    answer = str(interrupt({
        "unit": state.unit, "label": best.concept, "auc": round(best.scores.auc, 3),
        "runners_up": [s.concept for s in state.ranked()[1:4]],
        "question": prompts.render("review", unit=state.unit, label=best.concept, auc=f"{best.scores.auc:.3f}",
                                   runners_up=", ".join(s.concept for s in state.ranked()[1:4])),
    })).strip()
    if answer.lower() in {"", "approve", "approved", "yes", "y", "ok"}:
        return {"verdict": "approve", "events": [Event(iteration=state.iteration, kind="review", detail="approved")]}
    update = {"verdict": answer, "events": [Event(iteration=state.iteration, kind="review", concept=answer,
                                                  detail="a person proposed their own label")]}
    if state.step(answer) is None:
        update["steps"] = [score_step(ctx.engine, state.unit, answer, "user", state.iteration)]
    return update


def finalize(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """The label (a person's concept where they gave one, else the best-scoring concept, or
    a shorter one scoring within `loop.label_tolerance` of it), its runners-up, and the
    distinct meanings in the history."""
    if state.verdict not in (None, "approve"):
        chosen = state.step(state.verdict)
    else:
        best = state.best().scores.auc
        close = [s for s in state.steps if s.scores.auc >= best - runtime.context.loop.label_tolerance]
        chosen = min(close, key=lambda s: (len(s.concept.split()), -s.scores.auc))
    runners = [(s.concept, round(s.scores.auc, 4)) for s in state.ranked() if s.concept != chosen.concept][:3]
    embedder = runtime.context.dedup.embedder or default_embedder()
    return {"label": Label(concept=chosen.concept, scores=chosen.scores, runners_up=runners,
                           polysemanticity=analyse(state.steps, embedder))}
