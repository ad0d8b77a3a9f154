"""When to stop, and how to go on: the budgets and the stall policy.

The `stall` node starts every iteration: it stops on a spent budget; when the search stalls
(no new best in `loop.patience` iterations) the LLM and the operators take turns, and
after `loop.settle` such iterations the search ends; when the
LLM keeps failing or repeating itself, or its call budget is spent, the operators take over
for good.
"""

from __future__ import annotations

from agent.config import LoopConfig
from agent.loop.state import NeuronState
from tools.criterion import MAX_SHORTER, Criterion

LLM_STRATEGIES = ["refine", "explore", "combine", "contrast", "hot"]
HOT_TEMPERATURE_BOOST = 0.5
LLM_REJECTIONS = ("duplicate", "undrawable", "llm_failure")


def confirm_reserve(loop: LoopConfig) -> int:
    """Images the confirm step may need: the finalists' fresh ones, and a new shorter form's."""
    if not loop.confirm:
        return 0
    return (loop.confirm_top + 1 + MAX_SHORTER) * loop.confirm_images + loop.images_per_concept


def budget_spent(state: NeuronState, loop: LoopConfig) -> str | None:
    """Which budget is spent before the next iteration (None: none is)."""
    if state.iteration >= loop.max_iterations:
        return f"budget: {loop.max_iterations} iterations"
    if state.images_used() + loop.images_per_concept + confirm_reserve(loop) > loop.max_images:
        return f"budget: {loop.max_images} images"
    if state.elapsed >= loop.max_seconds:
        return f"budget: {loop.max_seconds:.0f} seconds"
    return None


def settled(state: NeuronState, loop: LoopConfig, criterion: Criterion) -> str | None:
    """Why the search ends early (None: it goes on): `loop.settle` iterations in a row
    without a new best beyond the images' noise (`gains(clear=True)`). A unit the
    vocabulary already explains stops spending there."""
    if not loop.settle or state.iteration < loop.settle:
        return None
    advanced = gains(state, criterion, clear=True)
    if any(advanced.get(i, False) for i in range(state.iteration - loop.settle + 1, state.iteration + 1)):
        return None
    return f"settled: no new best in {loop.settle} iterations"


def gains(state: NeuronState, criterion: Criterion, clear: bool = False) -> dict[int, bool]:
    """For each search step (by iteration), whether it advanced the search when scored: a
    new best by the criterion, or a shorter concept as strong as the best (parsimony).
    `clear`: only a new best beyond the noise of the images (the best so far is not as
    strong): on three images most "new bests" are noise that the confirmation undoes."""
    result, best = {}, None
    for step in state.steps:
        if step.source in ("summary", "user"):
            continue
        if clear:
            gain = best is None or (criterion.better(step.scores, best.scores)
                                    and not criterion.as_strong(best.scores, step.scores))
        else:
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
