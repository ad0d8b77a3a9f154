"""The nodes of the labelling graph. Each has one job and returns a state update.

Every concept, whoever proposes it (the LLM, an operator, the summary, a person in
review, the confirm step), travels one path (agent.loop.concept_path): `Proposal`s ->
`check` (acceptable? tools.concepts) -> `score` (render, activations, scores: Steps in the
history and LINE's pool, or the confirm step's Finalists). `finalize` chooses the label by
the run's criterion (agent.loop.label_choice). The state's `phase` says who proposed, so
the edges (agent.loop.graph) know where to go next. Heavy objects come from the runtime
context (`LineContext`); the state holds history.
"""

from __future__ import annotations

import time

import numpy as np
from langgraph.runtime import Runtime
from langgraph.types import interrupt

import prompts
from agent.loop import concept_path as path
from agent.loop import operators
from agent.loop.context import LineContext
from agent.loop.label_choice import choose_label, persons_label, pick_finalists
from agent.loop.proposal import ask_for_concept, failure_event, feedback, pool_lines, proposal_of, vocabulary_hint
from agent.loop.stall import HOT_TEMPERATURE_BOOST, budget_spent, next_strategy, settled, stall_trigger
from agent.loop.state import AtomScore, Label, NeuronState, Proposal
from tools.errors import LineError
from tools.generators.base import slot_reader
from tools.history import Event, Step, score_steps
from tools import meanings, verdict


SWEEP_KEPT = 40  # the unit's best sweep concepts kept in its history (the rest stay in the layer's bank)


def hold_unit(state: NeuronState, engine) -> dict:
    """The thread's unit, checked at every input (a served graph's `{"unit": N}` included):
    a unit of the layer with finite activations, and the one the thread started on. The
    update that holds it."""
    engine.check_unit(state.unit)
    engine.check_finite([state.unit])
    if state.held_unit is not None and state.held_unit != state.unit:
        raise LineError(f"this thread investigates unit {state.held_unit}, not unit {state.unit}: a thread is one neuron.",
                        f"Start a new thread for unit {state.unit}.")
    return {} if state.held_unit == state.unit else {"held_unit": state.unit}


# --- the start: the initial pool -----------------------------------------------------------
def init(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """LINE's initial pool: the top control classes for the unit and random ones, then, for
    free from the layer's concept bank, the unit's best atoms of the sweep and the bank's
    best other concepts."""
    held = hold_unit(state, runtime.context.engine)
    if state.steps:
        return held
    ctx, start = runtime.context, time.perf_counter()
    classes, means = ctx.engine.class_means()
    drawable = [c for c in (classes[i] for i in np.argsort(-means[:, state.unit], kind="stable"))
                if ctx.engine.generator.interpret(c).drawable]
    top = drawable[: ctx.loop.init_top]
    rest = [c for c in drawable if c not in top]
    chosen = top + ctx.rng(state).sample(rest, min(ctx.loop.init_random, len(rest)))
    steps = score_steps(ctx.engine, state.unit, chosen, "init", 0)
    sweep = sweep_scores(ctx, state.unit)
    steps += score_steps(ctx.engine, state.unit, [c for c in vocabulary_start(ctx, sweep) if c not in chosen], "sweep", 0)
    taken = [s.concept for s in steps] + [a.concept for a in ctx.atoms]
    bank = [c for c, _ in ctx.engine.bank_best(state.unit, ctx.loop.bank_top, exclude=taken, criterion=ctx.criterion)]
    steps += score_steps(ctx.engine, state.unit, bank, "bank", 0)
    pool = ctx.criterion.order(steps, lambda s: s.scores)[: ctx.loop.pool_size]
    kept = ctx.criterion.order(sweep, lambda a: a.scores)[:SWEEP_KEPT]
    return held | {"steps": steps, "pool": [s.concept for s in pool], "sweep": kept,
            "strategy": "refine" if ctx.chat is not None else "operators", "elapsed": time.perf_counter() - start}


def judge_vocabulary(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Before the search (`loop.search_when = "unexplained"`): the vocabulary's finalists
    (the criterion's shortlist of the unit's sweep concepts, the ones the confirm step
    weighs anyway) are scored on fresh images, the confirm step's seeds, so their images are
    reused there; when one passes the verdict's bar (tools.verdict), the vocabulary explains
    the unit and the search, with its LLM calls, is skipped. The agent works where the
    vocabulary falls short."""
    ctx = runtime.context
    if ctx.loop.search_when != "unexplained" or state.vocabulary_verdict is not None or state.iteration or not ctx.loop.confirm:
        return {}
    vocabulary = [s for s in state.steps if s.source == "sweep"]
    if not vocabulary or ctx.loop.max_iterations == 0:
        return {}
    start = time.perf_counter()
    shortlist = ctx.criterion.shortlist(vocabulary, lambda s: s.scores, lambda s: s.concept, ctx.loop.confirm_top)
    _, finalists = path.score(ctx, state.unit, [Proposal(concept=s.concept, source="confirm", iteration=0,
                                                         reasoning=f"the vocabulary's finalist ({why})")
                                                for s, why in shortlist])
    verdicts = [(f.concept, verdict.finalist_verdict(ctx.engine, state.unit, f)) for f in finalists]
    concept, best = max(verdicts, key=lambda item: (item[1].explained, item[1].evidence.auc or 0.0))
    update = {"vocabulary_verdict": best, "finalists": [*state.finalists, *finalists],
              "elapsed": time.perf_counter() - start}
    if best.explained:
        reason = (f"the vocabulary explains the unit: {concept!r} passes the verdict's bar on fresh images "
                  f"(AUC {best.evidence.auc:.3f}); no search beyond it")
        update |= {"stop_reason": reason, "events": [Event(iteration=0, kind="stop", concept=concept, reason=reason)]}
    return update


def vocabulary_start(ctx: LineContext, sweep: list[AtomScore]) -> list[str]:
    """Where the unit starts in the vocabulary: its best `loop.sweep_top` sweep concepts by
    the criterion, and the vocabulary's finalists (the criterion's shortlist, as a closed-
    vocabulary labeller would confirm them), so the confirm step always weighs them."""
    best = [a.concept for a in ctx.criterion.order(sweep, lambda a: a.scores)[: ctx.loop.sweep_top]]
    if not best:
        return []
    shortlist = ctx.criterion.shortlist(sweep, lambda a: a.scores, lambda a: a.concept, ctx.loop.confirm_top)
    return list(dict.fromkeys(best + [a.concept for a, _ in shortlist]))


def sweep_scores(ctx: LineContext, unit: int) -> list[AtomScore]:
    """The unit's scores of the layer's vocabulary sweep (rendered once for the layer)."""
    if not (ctx.loop.sweep and ctx.atoms):
        return []
    evidence = ctx.engine.sweep_evidence([a.concept for a in ctx.atoms])
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
        strategy=prompts.text(f"strategies/{state.strategy}").strip(), feedback=feedback(state),
    )
    temperature = ctx.temperature + (HOT_TEMPERATURE_BOOST if state.strategy == "hot" else 0.0)
    reply = ask_for_concept(ctx, user, temperature, seconds=ctx.loop.max_seconds - state.elapsed)
    update = {"elapsed": time.perf_counter() - start, "usage": reply.usage(), "phase": "search"}
    if reply.value is None:
        return update | {"proposals": [], "events": [failure_event(state.iteration, "llm", reply)]}
    return update | {"proposals": [proposal_of(reply, "llm", state.iteration, state.strategy)]}


def operate(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """An operator's concept: the best one changed attribute by attribute (agent.loop.operators).
    When none is new, the vocabulary is exhausted and the search stops."""
    found = next(path.operator_proposals(runtime.context, state, runtime.context.rng(state)), None)
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
    left = ctx.loop.max_seconds - state.elapsed
    if ctx.chat is not None and not asked and left > 0 and not state.vocabulary_explains():
        # a spent time budget asks the LLM no more; nor does a unit the vocabulary explains
        start = time.perf_counter()
        user = prompts.render("summarize_user", top=pool_lines(top, ctx.criterion))
        reply = ask_for_concept(ctx, user, ctx.temperature, seconds=left)
        update |= {"usage": reply.usage(), "elapsed": time.perf_counter() - start}
        if reply.value is not None:
            return update | {"proposals": [proposal_of(reply, "summary", iteration, "summary")]}
        update["events"] = [failure_event(iteration, "summary", reply)]
    if ctx.loop.simplify:
        best = path.canonical(ctx, top[0].concept)
        rejected = {e.concept for e in state.events if e.source == "summary"}
        for concept, how in operators.generalisations(best, slot_reader(ctx.engine.generator)):
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
    earlier concept it repeats (agent.loop.concept_path.rejection). A person's label in review that
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
        update["finalists"] = [*state.finalists, *finalists]
    if state.phase == "search" and steps:  # one search proposal an iteration
        update["pool"] = pool_with(ctx, state, steps[0])
    return update


# --- when to stop, and how to go on ----------------------------------------------------------
def stall(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Between iterations: stop on a spent budget; on a stall (with `loop.stall`), change
    strategy (the LLM and the operators take turns; when the LLM keeps failing, the
    operators take over for good); then start the next iteration."""
    ctx = runtime.context
    if state.stop_reason:
        return {}
    reason = budget_spent(state, ctx.loop) or settled(state, ctx.loop, ctx.criterion)
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


# --- the label ----------------------------------------------------------------------------------
def confirm(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """Propose the finalists for a fresh block of seeds: `score` scores each on all its images."""
    ctx = runtime.context
    if not ctx.loop.confirm or not state.steps:
        return {"phase": "confirm", "proposals": []}
    done = {f.concept for f in state.finalists}  # judge_vocabulary's, or all of them on a resumed run
    return {"phase": "confirm", "proposals": [Proposal(concept=concept, source="confirm", iteration=state.iteration,
                                                       reasoning=why) for concept, why in pick_finalists(ctx, state)
                                              if concept not in done]}


def finalize(state: NeuronState, runtime: Runtime[LineContext]) -> dict:
    """The label (a person's concept where they gave one, else the criterion's choice), its
    runners-up, and the distinct meanings in the history."""
    ctx = runtime.context
    verdicts: dict[str, verdict.Verdict] = {}

    def judged(finalist) -> verdict.Verdict:
        if finalist.concept not in verdicts:
            verdicts[finalist.concept] = verdict.finalist_verdict(ctx.engine, state.unit, finalist)
        return verdicts[finalist.concept]

    concept, scores, reason = choose_label(state, ctx.criterion, ctx.loop.simplify, lambda f: judged(f).explained)
    own = persons_label(state)
    if own is not None:
        concept, scores, reason = own.concept, own.scores, "a person's label, given in review"
    runners = [(s.concept, round(s.scores.auc, 4)) for s in state.ranked(ctx.criterion) if s.concept != concept][:3]
    confirmed = state.finalist(concept) is not None
    trust = (verdict.held_out_verdict(ctx.engine, state.unit, concept, ctx.loop.confirm_images) if confirmed
             else verdict.label_verdict(ctx.engine, state.unit, None))
    return {"label": Label(concept=concept, scores=scores, runners_up=runners, criterion=ctx.criterion.name,
                           reason=reason, polysemanticity=meanings.analyse(ctx.engine, state.unit, state.steps, concept,
                                                                            also=state.sweep_aucs()),
                           explained=trust.explained, confidence=trust)}



def pool_with(ctx: LineContext, state: NeuronState, step: Step) -> list[str]:
    """LINE's pool rule: a better concept evicts the worst; a worse one evicts a random
    entry but the best."""
    pool = list(state.pool)
    if len(pool) < ctx.loop.pool_size:
        return pool + [step.concept]
    ranked = ctx.criterion.order(pool, lambda c: state.step(c).scores)
    if ctx.criterion.better(step.scores, state.step(ranked[-1]).scores):
        victim = ranked[-1]
    else:
        victim = ctx.rng(state, salt=1).choice(ranked[1:])
    return [step.concept if c == victim else c for c in pool]
