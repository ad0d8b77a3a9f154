"""One path for a concept. Whoever proposes it (the LLM in the loop, an operator, the
summary, a person in review or in chat, the chat agent's tool call, the confirm step), it
travels the same way:

    Proposal -> rejection() (normalise, duplicate, drawable) -> score() (render, activations,
    scores: Steps, or Finalists for the confirm step) -> the graph records them

The labelling graph's `check` and `score` nodes and the chat graph's `dedup` node call
these functions; scoring itself is `tools.history.score_steps`, which the chat's
`score_concept` tool calls too. Operators' proposals come from here as well.
"""

from __future__ import annotations

import random
from typing import Iterator

from agent.loop import operators
from agent.loop.context import LineContext
from agent.loop.state import NeuronState, Proposal
from tools.generators.base import slot_reader
from tools.history import Event, Finalist, History, Step, confirm_finalists, score_steps


TOP_SCENES = 1  # operators: scenes of the unit's favourite images to propose first


# --- check ------------------------------------------------------------------------------------
def canonical(ctx: LineContext, concept: str) -> str:
    """The generator's normal form of `concept` where it has one (same scene, same words)."""
    return ctx.engine.generator.interpret(concept).canonical or concept


def fully_drawn(ctx: LineContext, concept: str) -> bool:
    """Whether `concept` is acceptable with every word drawn (operators must not make labels
    with words the images ignore), whatever was tried before."""
    return ctx.rules.accept(concept, fully_drawn=True).accepted


def is_new(ctx: LineContext, history: History, concept: str) -> bool:
    """Whether an operator's `concept` is acceptable: fully drawn and new."""
    return ctx.rules.accept(concept, history, fully_drawn=True, require_new=True).accepted


def rejection(ctx: LineContext, history: History, proposal: Proposal, also: list[str] = ()) -> Event | None:
    """The typed event saying why `proposal` is not scored (tools.concepts: too long, not
    drawable, or a duplicate of an earlier concept or of one in `also`, accepted but not
    scored yet), or None."""
    verdict = ctx.rules.accept(proposal.concept, [*history.tried(), *also])
    if verdict.accepted:
        return None
    return Event(iteration=proposal.iteration, kind="undrawable" if verdict.undrawable else "duplicate",
                 concept=proposal.concept, source=proposal.source, duplicate_of=verdict.duplicate_of,
                 reason=verdict.reason)


# --- score -------------------------------------------------------------------------------------
def score(ctx: LineContext, unit: int, proposals: list[Proposal]) -> tuple[list[Step], list[Finalist]]:
    """Score accepted proposals for `unit`, rendered together: Steps for the history, and
    Finalists (the loop's images plus a fresh block) for the confirm step's."""
    searched = [p for p in proposals if p.source != "confirm"]
    steps = score_steps(ctx.engine, unit, [p.concept for p in searched], "llm", 0)
    steps = [s.model_copy(update={"source": p.source, "iteration": p.iteration, "reasoning": p.reasoning,
                                  "strategy": p.strategy, "llm_calls": p.llm_calls, "llm_tokens": p.llm_tokens})
             for s, p in zip(steps, searched)]
    confirming = [(p.concept, p.reasoning) for p in proposals if p.source == "confirm"]
    finalists = confirm_finalists(ctx.engine, unit, confirming, ctx.loop.confirm_images) if confirming else []
    return steps, finalists


# --- operators' proposals ------------------------------------------------------------------
def operator_proposals(ctx: LineContext, state: NeuronState, rng: random.Random) -> Iterator[Proposal]:
    """New, fully drawn operator concepts (in the generator's normal form), best first, for
    the state's iteration."""
    reader = slot_reader(ctx.engine.generator)
    ranked = [canonical(ctx, s.concept) for s in state.ranked(ctx.criterion)]
    images = sorted(image_evidence(ctx, state), key=lambda item: -item[1])
    ranking = operators.attribute_ranking(images, reader)
    scenes = list(dict.fromkeys(scene for scene, _ in images))[:TOP_SCENES]
    atoms = [a.concept for a in ctx.criterion.order(state.sweep, lambda a: a.scores)]
    seen = {e.concept for e in state.events if e.iteration == state.iteration}  # rejected in this iteration
    for concept, how in operators.candidates(ranked, ranking, reader, rng, atoms, scenes):
        concept = canonical(ctx, concept)
        if concept not in seen and is_new(ctx, state, concept):
            seen.add(concept)
            yield Proposal(concept=concept, source="operator", iteration=state.iteration, reasoning=how,
                           strategy="operators")


def image_evidence(ctx: LineContext, state: NeuronState) -> list[tuple[str, float]]:
    """(what was drawn, the unit's activation) for every image the unit has seen with a
    known scene: the generated control set, the sweep's atoms and the unit's own steps."""
    drawn = ctx.engine.generator.drawn
    control = ctx.engine.control
    evidence = [(drawn(concept, seed), float(act)) for (concept, seed), act
                in zip(control.drawn_from, ctx.engine.control_activations()[:, state.unit])]
    seeds = ctx.engine.seeds()
    evidence += [(drawn(a.concept, seed), act) for a in state.sweep for seed, act in zip(seeds, a.activations)]
    evidence += [(drawn(s.concept, seed), act) for s in state.steps
                 for seed, act in zip(s.seeds, s.activations.per_image)]
    return evidence
