"""Choosing the label is its own step: the finalists confirmed on fresh seeds, then the
run's criterion's choice among them (tools.criterion: one meaning of "best"), or a
person's concept given in review."""

from __future__ import annotations

from typing import Callable

from agent.loop import concept_path as path
from agent.loop import operators
from agent.loop.context import LineContext
from agent.loop.state import NeuronState
from tools.criterion import Criterion
from tools.generators.base import slot_reader
from tools.history import Finalist, Step

MAX_NEW_GENERALISATIONS = 1  # when no shorter concept is as strong: shorter forms of the best not scored yet


def pick_finalists(ctx: LineContext, state: NeuronState) -> list[tuple[str, str]]:
    """(concept, why): the criterion's shortlist (the best few by the criterion, AUC and MAD
    in turn, the summary concept, the shortest concepts as strong as the best), else the
    first shorter form of the best not scored yet; one per scene."""
    criterion = ctx.criterion
    summary = [(s, "the summary") for s in state.steps if s.source == "summary"]
    # the vocabulary's own finalists are always confirmed too: a label found beyond the
    # vocabulary must beat them on fresh images, never displace them unconfirmed
    vocabulary = [s for s in state.steps if s.source == "sweep"]
    vocabulary = [(s, f"the vocabulary's finalist ({why})") for s, why in
                  criterion.shortlist(vocabulary, lambda s: s.scores, lambda s: s.concept, ctx.loop.confirm_top)]
    shortlist = criterion.shortlist(state.steps, lambda s: s.scores, lambda s: s.concept, ctx.loop.confirm_top,
                                    also=summary + vocabulary, key_of=lambda s: path.canonical(ctx, s.concept))
    chosen = [(s.concept, why) for s, why in shortlist]
    if not criterion.shorter(state.steps, lambda s: s.scores, lambda s: s.concept):
        best = state.ranked(criterion)[0]
        scored = {path.canonical(ctx, s.concept) for s in state.steps} | {path.canonical(ctx, c) for c, _ in chosen}
        shorter = [path.canonical(ctx, c) for c, _ in operators.generalisations(path.canonical(ctx, best.concept),
                                                                              slot_reader(ctx.engine.generator))]
        new = [c for c in dict.fromkeys(shorter) if c not in scored and path.fully_drawn(ctx, c)]
        chosen += [(c, f"a shorter form of {best.concept!r}") for c in new[:MAX_NEW_GENERALISATIONS]]
    return chosen


def choose_label(state: NeuronState, criterion: Criterion, parsimony: bool = True,
                 explained: Callable[[Finalist], bool] | None = None):
    """(concept, scores, why): the criterion's choice among the confirmed finalists, or,
    without a confirm step, among every scored step.

    `explained` (tools.verdict on a finalist's fresh images): when the criterion's choice
    fails the verdict's bar and other finalists pass it, the choice is made again among those
    that pass. A label that passes the bar is never given up for one that fails it, for
    brevity or for strength against the control set: "speckle" may be as strong as "black
    and white speckle" on drawings and still fire a corner detector less than ordinary photos
    do, which explains nothing. Only the choice is judged unless it fails: one verdict a unit."""
    if state.finalists:
        def choose(finalists):
            return criterion.choose(finalists, lambda f: f.scores, lambda f: f.concept, parsimony)

        choice, left_out = choose(state.finalists), []
        if explained is not None and not explained(choice.winner):
            passing = [f for f in state.finalists if f is not choice.winner and explained(f)]
            if passing:
                left_out = [f.concept for f in state.finalists if f not in passing]
                choice = choose(passing)
        fresh = state.finalists[0].fresh
        why = f"Confirmed on {fresh} fresh images each ({len(state.finalists)} finalists"
        if left_out:
            why += (f"; {len(left_out)} left out that fail the verdict's bar: "
                    + ", ".join(repr(c) for c in left_out[:3]) + (", ..." if len(left_out) > 3 else ""))
        return choice.winner.concept, choice.winner.scores, f"{why}): {choice.reason}"
    choice = criterion.choose(state.steps, lambda s: s.scores, lambda s: s.concept, parsimony)
    return choice.winner.concept, choice.winner.scores, choice.reason


def persons_label(state: NeuronState) -> Step | None:
    """The step of the concept a person gave in review: theirs, or the earlier concept it
    repeats."""
    if state.verdict in (None, "approve"):
        return None
    repeated = [e.duplicate_of for e in state.events if e.kind == "duplicate" and e.concept == state.verdict]
    return state.step(state.verdict) or (state.step(repeated[-1]) if repeated else None)
