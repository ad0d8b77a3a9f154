"""The generation history of one neuron, as data: scored steps and other events.

It is the state the agent's graphs build (agent/loop/state.py extends `History` with the loop's
own fields) and what the typed tools read and append to. `score_step` turns one concept
into a `Step` through the shared engine.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.criterion import Criterion
from tools.engine import Engine
from tools.scoring import Scores

Source = Literal["init", "sweep", "bank", "llm", "operator", "summary", "user"]
FREE_SOURCES = ("sweep", "bank")  # steps read from the layer's concept bank: no images of their own
EventKind = Literal["duplicate", "undrawable", "llm_failure", "strategy", "stop", "review", "ablation"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActivationStats(Record):
    mean: float
    std: float
    min: float
    max: float
    per_image: list[float] = Field(default_factory=list, description="the unit's activation on each image, in seed order")


class Step(Record):
    """One scored concept."""

    iteration: int
    concept: str
    source: Source
    strategy: str = ""
    reasoning: str = ""
    prompts: list[str]
    seeds: list[int]
    image_keys: list[str]
    images_rendered: int = Field(description="images that had to be generated (not cached)")
    understood: list[str] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    canonical: str | None = None
    activations: ActivationStats
    scores: Scores
    seconds: float
    llm_calls: int = Field(0, description="LLM requests spent on proposing this concept")
    llm_tokens: int = Field(0, description="their input + output tokens")


class Event(Record):
    """Something that happened besides scoring: a rejected proposal, a stall, a stop, an ablation."""

    iteration: int
    kind: EventKind
    concept: str = ""
    source: str = Field("", description="who proposed `concept`: llm, operator, summary, user")
    duplicate_of: str | None = Field(None, description="duplicate: the earlier concept it repeats")
    reason: str = Field("", description="why: the duplicate test, the stall trigger, the stop, the LLM's failures")
    strategy: str = Field("", description="strategy: the strategy taken up")
    detail: str = Field("", description="anything else, in words (an ablation's figures)")


def event_text(event: Event) -> str:
    """An event's typed fields in words, for tables and the LLM."""
    parts = [f"repeats {event.duplicate_of!r}" if event.duplicate_of else "", event.reason,
             f"-> {event.strategy}" if event.strategy else "", event.detail]
    return ": ".join(p for p in parts[:2] if p) + "".join(f" {p}" for p in parts[2:] if p)


class Finalist(Record):
    """A candidate label confirmed on fresh images before the label is chosen."""

    concept: str
    why: str = Field(description="why it is a finalist: top by the criterion, the summary, a shorter form of the best")
    seeds: list[int] = Field(description="every seed it was scored on: the loop's, then the fresh block")
    image_keys: list[str]
    activations: list[float] = Field(description="the unit's activation on each image, in seed order")
    fresh: int = Field(description="how many of the images (the last ones) are the fresh block")
    images_rendered: int
    scores: Scores = Field(description="on all its images")


class History(Record):
    """One neuron's history. `steps` and `events` only grow; `iteration` counts proposals."""

    unit: int
    steps: Annotated[list[Step], operator.add] = Field(default_factory=list)
    events: Annotated[list[Event], operator.add] = Field(default_factory=list)
    iteration: int = 0
    finalists: list[Finalist] = Field(default_factory=list, description="the confirm step's candidates")
    call_iterations: dict[str, int] = Field(default_factory=dict,
                                            description="chat: the iteration each accepted score call records at")

    def best(self, criterion: Criterion) -> Step | None:
        """The best scored step by `criterion` (the run's: one meaning of "best")."""
        ranked = self.ranked(criterion)
        return ranked[0] if ranked else None

    def step(self, concept: str) -> Step | None:
        return next((s for s in self.steps if s.concept == concept), None)

    def ranked(self, criterion: Criterion) -> list[Step]:
        """Every scored step, best first by `criterion`."""
        return criterion.order(self.steps, lambda s: s.scores)

    def finalist(self, concept: str) -> Finalist | None:
        return next((f for f in self.finalists if f.concept == concept), None)

    def images_rendered(self) -> int:
        return sum(s.images_rendered for s in self.steps) + sum(f.images_rendered for f in self.finalists)

    def images_used(self) -> int:
        """Images scored for this unit alone, cached or not (the budget's measure): its steps'
        (not those read from the concept bank) and the confirm step's fresh ones."""
        confirmed = sum(f.fresh if self.step(f.concept) else len(f.image_keys) for f in self.finalists)
        return sum(len(s.image_keys) for s in self.steps if s.source not in FREE_SOURCES) + confirmed

    def tried(self) -> list[str]:
        return [s.concept for s in self.steps]


CONFIRM_SEED = 1_000  # the confirm step's fresh images: seeds no other step uses (loop 0.., CoSy 5000.., control 10000..)


def score_step(engine: Engine, unit: int, concept: str, source: Source, iteration: int,
               reasoning: str = "", strategy: str = "") -> Step:
    """Render, score and record one concept for `unit` (all units are scored at once, so
    the layer's concept bank keeps them all)."""
    step = score_steps(engine, unit, [concept], source, iteration)[0]
    return step.model_copy(update={"reasoning": reasoning, "strategy": strategy})


def score_steps(engine: Engine, unit: int, concepts: list[str], source: Source, iteration: int) -> list[Step]:
    """`score_step` for several concepts, rendered and scored together."""
    if not concepts:
        return []
    start = time.perf_counter()
    evidence = engine.evaluate_many(concepts)
    seconds = round((time.perf_counter() - start) / len(concepts), 3)
    steps = []
    for e in evidence:
        acts = e.activations[:, unit]
        steps.append(Step(
            iteration=iteration, concept=e.concept, source=source,
            prompts=[r.prompt for r in e.images], seeds=[r.seed for r in e.images],
            image_keys=[r.key for r in e.images], images_rendered=e.rendered,
            understood=e.interpretation.understood, ignored=e.interpretation.ignored,
            canonical=e.interpretation.canonical,
            activations=ActivationStats(mean=float(acts.mean()), std=float(acts.std()), min=float(acts.min()),
                                        max=float(acts.max()), per_image=[float(a) for a in acts]),
            scores=e.scores(unit), seconds=seconds,
        ))
    return steps


def confirm_finalists(engine: Engine, unit: int, finalists: list[tuple[str, str]], images: int) -> list[Finalist]:
    """Each (concept, why) scored for `unit` on the loop's seeds and a fresh block of `images`
    seeds from CONFIRM_SEED, rendered together: the loop's images come from the cache."""
    seeds = engine.seeds() + engine.seeds(images, start=CONFIRM_SEED)
    evidence = engine.evaluate_many([concept for concept, _ in finalists], seeds)
    return [Finalist(concept=concept, why=why, seeds=seeds, image_keys=[r.key for r in e.images],
                     activations=[float(a) for a in e.activations[:, unit]], fresh=images,
                     images_rendered=e.rendered, scores=e.scores(unit))
            for (concept, why), e in zip(finalists, evidence)]
