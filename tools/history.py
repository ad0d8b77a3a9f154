"""The generation history of one neuron, as data: scored steps and other events.

It is the state the agent's graphs build (agent/state.py extends `History` with the loop's
own fields) and what the typed tools read and append to. `score_step` turns one concept
into a `Step` through the shared engine.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.engine import Engine
from tools.scoring import Scores

Source = Literal["init", "bank", "llm", "operator", "summary", "user"]
EventKind = Literal["duplicate", "undrawable", "llm_failure", "strategy", "stop", "review", "ablation"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActivationStats(Record):
    mean: float
    std: float
    min: float
    max: float


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
    detail: str = ""


class History(Record):
    """One neuron's history. `steps` and `events` only grow; `iteration` counts proposals."""

    unit: int
    steps: Annotated[list[Step], operator.add] = Field(default_factory=list)
    events: Annotated[list[Event], operator.add] = Field(default_factory=list)
    iteration: int = 0

    def best(self) -> Step | None:
        return max(self.steps, key=lambda s: (s.scores.auc, s.scores.mad), default=None)

    def step(self, concept: str) -> Step | None:
        return next((s for s in self.steps if s.concept == concept), None)

    def ranked(self) -> list[Step]:
        return sorted(self.steps, key=lambda s: (-s.scores.auc, -s.scores.mad))

    def images_rendered(self) -> int:
        return sum(s.images_rendered for s in self.steps)

    def images_used(self) -> int:
        return sum(len(s.image_keys) for s in self.steps if s.source != "bank")

    def tried(self) -> list[str]:
        return [s.concept for s in self.steps]


def score_step(engine: Engine, unit: int, concept: str, source: Source, iteration: int,
               reasoning: str = "", strategy: str = "") -> Step:
    """Render, score and record one concept for `unit` (all units are scored at once, so
    the layer's concept bank keeps them all)."""
    start = time.perf_counter()
    evidence = engine.evaluate(concept)
    acts = evidence.activations[:, unit]
    return Step(
        iteration=iteration, concept=concept, source=source, strategy=strategy, reasoning=reasoning,
        prompts=[r.prompt for r in evidence.images], seeds=[r.seed for r in evidence.images],
        image_keys=[r.key for r in evidence.images], images_rendered=evidence.rendered,
        understood=evidence.interpretation.understood, ignored=evidence.interpretation.ignored,
        canonical=evidence.interpretation.canonical,
        activations=ActivationStats(mean=float(acts.mean()), std=float(acts.std()),
                                    min=float(acts.min()), max=float(acts.max())),
        scores=evidence.scores(unit), seconds=round(time.perf_counter() - start, 3),
    )
