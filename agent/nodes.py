"""The nodes of the labelling graph. Each has one job and returns a state update.

Every concept, whoever proposes it (the LLM, an operator, the summary, a person in
review, the confirm step), travels one path (agent.path): `Proposal`s -> `check` (new?
drawable?) -> `score` (render, activations, scores: Steps in the history and LINE's pool,
or the confirm step's Finalists). `finalize` chooses the label by the run's criterion
(tools.criterion). The state's `phase` says who proposed, so the edges know where to go
next. Heavy objects come from the runtime context (`LineContext`); the state holds history.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

import prompts
from agent import operators, path
from agent.config import LoopConfig
from agent.dedup import Deduplicator
from agent.llm import ask_structured
from agent.state import AtomScore, Label, NeuronState, Proposal
from tools.criterion import Criterion
from tools.engine import Engine
from tools.generators.base import Atom, ImageGenerator
from tools.history import Event, Step, score_steps
from tools import meanings, verdict

LLM_STRATEGIES = ["refine", "explore", "combine", "contrast", "hot"]
HOT_TEMPERATURE_BOOST = 0.5
LLM_REJECTIONS = ("duplicate", "undrawable", "llm_failure")
MAX_SHORTER = 2  # finalists: the shortest concepts scored already that are as strong as the best
MAX_NEW_GENERALISATIONS = 1  # or, when there is none, shorter forms of the best not scored yet


@dataclass
class LineContext:
    """Everything heavy a run needs; never checkpointed."""

    engine: Engine
    dedup: Deduplicator
    loop: LoopConfig
    chat: BaseChatModel | None = None
    temperature: float = 0.7
    llm_retries: int = 2
    criterion: Criterion = field(default_factory=Criterion)
    atoms: list[Atom] = field(default_factory=list)  # the layer-wide sweep's concepts


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


def _answer_schema(ctx: LineContext) -> type[ConceptAnswer]:
    vocabulary = ctx.engine.generator.vocabulary()
    return answer_schema(tuple(w for words in vocabulary.values() for w in words))


# --- helpers shared by nodes ---------------------------------------------------------------
def _rng(ctx: LineContext, state: NeuronState, salt: int = 0) -> random.Random:
    return random.Random(ctx.loop.seed * 1_000_003 + state.unit * 7_919 + state.iteration * 31 + salt)


def pool_lines(steps: list[Step], criterion: Criterion) -> str:
    """`concept: AUC …, MAD …` lines, best first by the criterion."""
    return "\n".join(f"{s.concept}: AUC {s.scores.auc:.3f}, MAD {s.scores.mad:.2f}"
                     for s in criterion.order(steps, lambda s: s.scores))


def _feedback(state: NeuronState) -> str:
    """What the LLM should know about its proposal rejected in this iteration."""
    last = state.events[-1] if state.events else None
    if last is None or last.iteration != state.iteration or last.source != "llm":
        return ""
    if last.kind == "duplicate":
        return prompts.render("feedback_duplicate", concept=last.concept, earlier=last.duplicate_of, reason=last.reason)
    if last.kind == "undrawable":
        return prompts.render("feedback_undrawable", concept=last.concept, reason=last.reason)
    return ""


def vocabulary_hint(generator: ImageGenerator) -> str:
    """The generator's words for the LLM's prompt ("" for open-vocabulary generators)."""
    vocabulary = generator.vocabulary()
    if not vocabulary:
        return ""
    words = "\n".join(f"- {category}: {', '.join(words)}" for category, words in vocabulary.items())
    return prompts.render("vocabulary", words=words)


def _failure(iteration: int, source: str, reply) -> Event:
    return Event(iteration=iteration, kind="llm_failure", source=source, reason=" / ".join(reply.failures)[:500])


# --- the start: the initial pool -----------------------------------------------------------
def init(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """LINE's initial pool: the top control classes for the unit and random ones, then, for
    free from the layer's concept bank, the unit's best atoms of the sweep and the bank's
    best other concepts."""
    if state.steps:
        return {}
    ctx, start = runtime.context, time.perf_counter()
    classes, means = ctx.engine.class_means()
    drawable = [c for c in (classes[i] for i in np.argsort(-means[:, state.unit], kind="stable"))
                if ctx.engine.generator.interpret(c).drawable]
    top = drawable[: ctx.loop.init_top]
    rest = [c for c in drawable if c not in top]
    chosen = top + _rng(ctx, state).sample(rest, min(ctx.loop.init_random, len(rest)))
    steps = score_steps(ctx.engine, state.unit, chosen, "init", 0)
    sweep = sweep_scores(ctx, state.unit)
    atoms = [a.concept for a in ctx.criterion.order(sweep, lambda a: a.scores) if a.concept not in chosen]
    steps += score_steps(ctx.engine, state.unit, atoms[: ctx.loop.sweep_top], "sweep", 0)
    taken = [s.concept for s in steps] + [a.concept for a in sweep]
    bank = [c for c, _ in ctx.engine.bank_best(state.unit, ctx.loop.bank_top, exclude=taken, criterion=ctx.criterion)]
    steps += score_steps(ctx.engine, state.unit, bank, "bank", 0)
    pool = ctx.criterion.order(steps, lambda s: s.scores)[: ctx.loop.pool_size]
    return {"steps": steps, "pool": [s.concept for s in pool], "sweep": sweep,
            "strategy": "refine" if ctx.chat is not None else "operators", "elapsed": time.perf_counter() - start}


def sweep_scores(ctx: LineContext, unit: int) -> list[AtomScore]:
    """The unit's scores of the layer's attribute sweep (rendered once for the layer)."""
    if not (ctx.loop.sweep and ctx.atoms):
        return []
    evidence = ctx.engine.evaluate_many([a.concept for a in ctx.atoms])
    return [AtomScore(category=a.category, value=a.value, concept=a.concept, scores=e.scores(unit),
                      activations=[float(x) for x in e.activations[:, unit]])
            for a, e in zip(ctx.atoms, evidence)]


# --- who proposes ----------------------------------------------------------------------------
def propose(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """The LLM's concept under the current strategy (told about a rejected one)."""
    ctx, start = runtime.context, time.perf_counter()
    user = prompts.render(
        "propose_user", pool=pool_lines([state.step(c) for c in state.pool], ctx.criterion),
        tried=", ".join(state.tried()), vocabulary=vocabulary_hint(ctx.engine.generator),
        strategy=prompts.text(f"strategies/{state.strategy}").strip(), feedback=_feedback(state),
    )
    temperature = ctx.temperature + (HOT_TEMPERATURE_BOOST if state.strategy == "hot" else 0.0)
    reply = ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                           _answer_schema(ctx), temperature=temperature, retries=ctx.llm_retries)
    update = {"elapsed": time.perf_counter() - start, "usage": reply.usage(), "phase": "search"}
    if reply.value is None:
        return update | {"proposals": [], "events": [_failure(state.iteration, "llm", reply)]}
    return update | {"proposals": [Proposal(concept=reply.value.concept, source="llm", iteration=state.iteration,
                                            reasoning=reply.value.reasoning, strategy=state.strategy,
                                            llm_calls=reply.attempts,
                                            llm_tokens=reply.input_tokens + reply.output_tokens)]}


def operate(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """An operator's concept: the best one changed attribute by attribute (agent.operators).
    When none is new, the vocabulary is exhausted and the search stops."""
    found = next(path.operator_proposals(runtime.context, state, _rng(runtime.context, state)), None)
    if found is not None:
        return {"proposals": [found], "phase": "search"}
    reason = "vocabulary exhausted: operators found no new concept"
    return {"proposals": [], "stop_reason": reason, "events": [Event(iteration=state.iteration, kind="stop", reason=reason)]}


def summarize(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """LINE's summary iteration: the LLM merges the three best concepts into a more general
    one. Where it gives nothing usable or new (or there is no LLM), and `loop.simplify` is
    on, a shorter form of the best concept is proposed instead."""
    ctx = runtime.context
    top = state.ranked(ctx.criterion)[:3]
    if not ctx.loop.summary or len(top) < 2 or any(s.source == "summary" for s in state.steps):
        return {"phase": "summary", "proposals": []}
    iteration = state.iteration + 1
    asked = any(e.source == "summary" for e in state.events)
    update: dict = {"phase": "summary", "proposals": []}
    if ctx.chat is not None and not asked:
        start = time.perf_counter()
        user = prompts.render("summarize_user", top=pool_lines(top, ctx.criterion))
        reply = ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                               _answer_schema(ctx), temperature=ctx.temperature, retries=ctx.llm_retries)
        update |= {"usage": reply.usage(), "elapsed": time.perf_counter() - start}
        if reply.value is not None:
            return update | {"proposals": [Proposal(concept=reply.value.concept, source="summary", iteration=iteration,
                                                    reasoning=reply.value.reasoning, strategy="summary",
                                                    llm_calls=reply.attempts,
                                                    llm_tokens=reply.input_tokens + reply.output_tokens)]}
        update["events"] = [_failure(iteration, "summary", reply)]
    if ctx.loop.simplify:
        best = path.canonical(ctx, top[0].concept)
        rejected = {e.concept for e in state.events if e.source == "summary"}
        for concept, how in operators.generalisations(best, ctx.engine.generator.vocabulary()):
            concept = path.canonical(ctx, concept)
            if concept not in rejected and path.is_new(ctx, state, concept):
                return update | {"proposals": [Proposal(concept=concept, source="summary", iteration=iteration,
                                                        reasoning=how, strategy="generalise")]}
    return update


def review(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Optionally pause for a person: approve the label or give a concept of their own."""
    ctx = runtime.context
    if not ctx.loop.review or state.verdict is not None:
        return {"phase": "review", "proposals": []}
    label, scores, _ = choose_label(state, ctx.criterion, ctx.loop.simplify)
    runners_up = [s.concept for s in state.ranked(ctx.criterion) if s.concept != label][:3]
    answer = str(interrupt({
        "unit": state.unit, "label": label, "auc": round(scores.auc, 3), "runners_up": runners_up,
        "question": prompts.render("review", unit=state.unit, label=label, auc=f"{scores.auc:.3f}",
                                   runners_up=", ".join(runners_up)),
    })).strip()
    update = {"phase": "review", "proposals": []}
    if answer.lower() in {"", "approve", "approved", "yes", "y", "ok"}:
        return update | {"verdict": "approve",
                         "events": [Event(iteration=state.iteration, kind="review", reason="approved")]}
    update |= {"verdict": answer, "events": [Event(iteration=state.iteration, kind="review", concept=answer,
                                                   source="user", reason="a person proposed their own label")]}
    if state.step(answer) is None:
        update["proposals"] = [Proposal(concept=answer, source="user", iteration=state.iteration)]
    return update


# --- the one path: check and score -----------------------------------------------------------
def check(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Drop proposals already tried (same words, same scene or, for open vocabularies, the
    same meaning) or that cannot be drawn; each rejection is a typed event saying which
    earlier concept it repeats (agent.path.rejection). A person's label in review that
    repeats an earlier concept takes that concept's scores."""
    ctx = runtime.context
    events = [e for e in (path.rejection(ctx, state, p) for p in state.proposals) if e is not None]
    if not events:
        return {}
    rejected = {e.concept for e in events}
    return {"proposals": [p for p in state.proposals if p.concept not in rejected], "events": events}


def score(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Score the proposals (rendered together) and record them: Steps in the history and,
    for search steps, LINE's pool; or the confirm step's Finalists."""
    ctx, start = runtime.context, time.perf_counter()
    steps, finalists = path.score(ctx, state.unit, state.proposals)
    update: dict = {"proposals": [], "steps": steps, "elapsed": time.perf_counter() - start}
    if finalists:
        update["finalists"] = finalists
    if state.phase == "search" and steps:  # one search proposal an iteration
        update["pool"] = pool_with(ctx, state, steps[0])
    return update


def pool_with(ctx: LineContext, state: NeuronState, step: Step) -> list[str]:
    """A better concept evicts the worst; a worse one evicts a random entry but the best."""
    pool = list(state.pool)
    if len(pool) < ctx.loop.pool_size:
        return pool + [step.concept]
    ranked = ctx.criterion.order(pool, lambda c: state.step(c).scores)
    if ctx.criterion.better(step.scores, state.step(ranked[-1]).scores):
        victim = ranked[-1]
    else:
        victim = _rng(ctx, state, salt=1).choice(ranked[1:])
    return [step.concept if c == victim else c for c in pool]


# --- when to stop, and how to go on ----------------------------------------------------------
def stall(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Between iterations: stop on a spent budget; on a stall (with `loop.stall`), change
    strategy (the LLM and the operators take turns; when the LLM keeps failing, the
    operators take over for good); then start the next iteration."""
    ctx = runtime.context
    if state.stop_reason:
        return {}
    reason = budget_spent(state, ctx.loop)
    if reason:
        return {"stop_reason": reason, "events": [Event(iteration=state.iteration, kind="stop", reason=reason)]}
    update: dict = {"iteration": state.iteration + 1}
    if state.llm_retired or ctx.chat is None or not ctx.loop.stall:
        return update
    trigger, failing = stall_trigger(state, ctx.loop, ctx.criterion)
    following = "operators" if failing else next_strategy(state, ctx.criterion)
    if trigger is None or following == state.strategy:
        return update
    return update | {"strategy": following, "llm_retired": failing, "events": [Event(
        iteration=state.iteration, kind="strategy", reason=trigger, strategy=following)]}


def confirm_reserve(loop: LoopConfig) -> int:
    """Images the confirm step may need: the finalists' fresh ones, and a new shorter form's."""
    if not loop.confirm:
        return 0
    return (loop.confirm_top + 1 + MAX_SHORTER) * loop.confirm_images + loop.images_per_concept


def budget_spent(state: NeuronState, loop: LoopConfig) -> str | None:
    if state.iteration >= loop.max_iterations:
        return f"budget: {loop.max_iterations} iterations"
    if state.images_used() + loop.images_per_concept + confirm_reserve(loop) > loop.max_images:
        return f"budget: {loop.max_images} images"
    if state.elapsed >= loop.max_seconds:
        return f"budget: {loop.max_seconds:.0f} seconds"
    return None


def gains(state: NeuronState, criterion: Criterion) -> dict[int, bool]:
    """For each search step (by iteration), whether it advanced the search when scored: a
    new best by the criterion, or a shorter concept as strong as the best (parsimony)."""
    result, best = {}, None
    for step in state.steps:
        if step.source in ("summary", "user"):
            continue
        gain = best is None or criterion.better(step.scores, best.scores) or (
            len(step.concept.split()) < len(best.concept.split()) and criterion.as_strong(step.scores, best.scores))
        if gain:
            best = step
        if step.iteration > 0:
            result[step.iteration] = gain
    return result


def outcomes(state: NeuronState, criterion: Criterion) -> list[tuple[str, bool]]:
    """Each iteration since the last strategy change, oldest first: what became of its
    proposal ('ok' when the LLM's was scored, else the kind of the last rejection, or 'none'
    when nobody proposed) and whether the iteration advanced the search (`gains`)."""
    since = max((e.iteration for e in state.events if e.kind == "strategy"), default=0)
    advanced = gains(state, criterion)
    result = []
    for iteration in range(since + 1, state.iteration + 1):
        step = next((s for s in state.steps if s.iteration == iteration and s.source in ("llm", "operator")), None)
        rejections = [e.kind for e in state.events if e.iteration == iteration and e.kind in LLM_REJECTIONS]
        llm = "ok" if step is not None and step.source == "llm" else (rejections[-1] if rejections else "none")
        result.append((llm, advanced.get(iteration, False)))
    return result


def stall_trigger(state: NeuronState, loop: LoopConfig, criterion: Criterion) -> tuple[str | None, bool]:
    """(why the search is stalled or None, whether the LLM should hand over to operators)."""
    history = outcomes(state, criterion)

    def streak(test) -> int:
        n = 0
        for outcome in reversed(history):
            if not test(outcome):
                break
            n += 1
        return n

    if state.usage.llm_calls >= loop.max_llm_calls:
        return f"the LLM call budget ({loop.max_llm_calls}) is spent", True
    failures = streak(lambda o: o[0] in ("llm_failure", "undrawable"))
    if failures >= loop.failure_streak:
        return f"{failures} unusable or undrawable LLM answers in a row", True
    rejected = streak(lambda o: o[0] in LLM_REJECTIONS)
    if rejected >= loop.duplicate_streak:
        return f"{rejected} rejected proposals in a row", True
    without_gain = streak(lambda o: not o[1])
    if without_gain >= loop.patience:
        return f"no new best in {without_gain} iterations", False
    return None, False


def next_strategy(state: NeuronState, criterion: Criterion) -> str:
    """After the LLM stalls, the operators; after the operators stall, the LLM again, with
    the strategy after the last one it had (refine, explore, combine, contrast, hot,
    refine...), but only if one of its concepts ever advanced the search: a weak LLM does
    not get turns back from operators that work."""
    if state.strategy != "operators":
        return "operators"
    advanced = gains(state, criterion)
    if not any(advanced.get(s.iteration) for s in state.steps if s.source == "llm"):
        return "operators"
    used = [e.strategy for e in state.events if e.kind == "strategy" and e.strategy in LLM_STRATEGIES]
    last = used[-1] if used else LLM_STRATEGIES[0]
    return LLM_STRATEGIES[(LLM_STRATEGIES.index(last) + 1) % len(LLM_STRATEGIES)]


# --- the label ----------------------------------------------------------------------------------
def confirm(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Propose the finalists for a fresh block of seeds: `score` scores each on all its images."""
    ctx = runtime.context
    if not ctx.loop.confirm or state.finalists or not state.steps:
        return {"phase": "confirm", "proposals": []}
    return {"phase": "confirm", "proposals": [Proposal(concept=concept, source="confirm", iteration=state.iteration,
                                                       reasoning=why) for concept, why in pick_finalists(ctx, state)]}


def pick_finalists(ctx: LineContext, state: NeuronState) -> list[tuple[str, str]]:
    """(concept, why): the best few by the criterion, AUC and MAD in turn, the summary
    concept, and shorter ones: the shortest concepts scored so far that are as strong as the
    best (else the first shorter form of the best, not scored yet); one per scene."""
    criterion = ctx.criterion
    chosen = [(s.concept, why) for s, why in criterion.finalists(state.steps, lambda s: s.scores, ctx.loop.confirm_top)]
    chosen += [(s.concept, "the summary") for s in state.steps if s.source == "summary"]
    best = state.ranked(criterion)[0]
    known = criterion.shorter(state.steps, lambda s: s.scores, lambda s: s.concept)
    chosen += [(s.concept, f"shorter than {best.concept!r} and as strong") for s in known[:MAX_SHORTER]]
    if not known:
        scored = {path.canonical(ctx, s.concept) for s in state.steps}
        shorter = [path.canonical(ctx, c) for c, _ in operators.generalisations(path.canonical(ctx, best.concept),
                                                                              ctx.engine.generator.vocabulary())]
        new = [c for c in shorter if c not in scored and path.fully_drawn(ctx, c)][:MAX_NEW_GENERALISATIONS]
        chosen += [(c, f"a shorter form of {best.concept!r}") for c in new]
    unique: dict[str, tuple[str, str]] = {}
    for concept, why in chosen:
        unique.setdefault(path.canonical(ctx, concept), (concept, why))
    return list(unique.values())


def choose_label(state: NeuronState, criterion: Criterion, parsimony: bool = True):
    """(concept, scores, why): the criterion's choice among the confirmed finalists, or,
    without a confirm step, among every scored step."""
    if state.finalists:
        choice = criterion.choose(state.finalists, lambda f: f.scores, lambda f: f.concept, parsimony)
        fresh = state.finalists[0].fresh
        return (choice.winner.concept, choice.winner.scores,
                f"Confirmed on {fresh} fresh images each ({len(state.finalists)} finalists): {choice.reason}")
    choice = criterion.choose(state.steps, lambda s: s.scores, lambda s: s.concept, parsimony)
    return choice.winner.concept, choice.winner.scores, choice.reason


def persons_label(state: NeuronState) -> Step | None:
    """The step of the concept a person gave in review: theirs, or the earlier concept it
    repeats."""
    if state.verdict in (None, "approve"):
        return None
    repeated = [e.duplicate_of for e in state.events if e.kind == "duplicate" and e.concept == state.verdict]
    return state.step(state.verdict) or (state.step(repeated[-1]) if repeated else None)


def finalize(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """The label (a person's concept where they gave one, else the criterion's choice), its
    runners-up, and the distinct meanings in the history."""
    ctx = runtime.context
    concept, scores, reason = choose_label(state, ctx.criterion, ctx.loop.simplify)
    own = persons_label(state)
    if own is not None:
        concept, scores, reason = own.concept, own.scores, "a person's label, given in review"
    runners = [(s.concept, round(s.scores.auc, 4)) for s in state.ranked(ctx.criterion) if s.concept != concept][:3]
    finalist = state.finalist(concept)
    trust = verdict.label_verdict(ctx.engine, state.unit, finalist.activations[-finalist.fresh:] if finalist and finalist.fresh else None)
    return {"label": Label(concept=concept, scores=scores, runners_up=runners, criterion=ctx.criterion.name,
                           reason=reason, polysemanticity=meanings.analyse(ctx.engine, state.unit, state.steps, concept),
                           explained=trust.explained, confidence=trust)}

