"""The graph state: one neuron's generation history, serialisable as data.

Heavy objects (models, generators, the LLM client) never live here; images are referred to
by their cache keys. A checkpoint of this state resumes a run on another day.
"""

from __future__ import annotations

import operator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.polysemantic import Polysemanticity
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


class Event(Record):
    """Something that happened besides scoring: a rejected proposal, a stall, a stop."""

    iteration: int
    kind: EventKind
    concept: str = ""
    detail: str = ""


class Proposal(Record):
    """A concept waiting to be checked and scored."""

    concept: str
    source: Source
    reasoning: str = ""
    strategy: str = ""


class Usage(Record):
    llm_calls: int = 0
    llm_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


class Label(Record):
    concept: str
    scores: Scores
    runners_up: list[tuple[str, float]] = Field(default_factory=list, description="(concept, AUC)")
    polysemanticity: Polysemanticity | None = Field(None, description="meanings in the history (agent.polysemantic)")


class NeuronState(Record):
    """One neuron's investigation. `steps` and `events` only grow."""

    unit: int
    steps: Annotated[list[Step], operator.add] = Field(default_factory=list)
    events: Annotated[list[Event], operator.add] = Field(default_factory=list)
    pool: list[str] = Field(default_factory=list, description="concepts shown to the LLM, LINE's pool")
    proposal: Proposal | None = None
    iteration: int = 0
    strategy: str = "refine"
    usage: Annotated[Usage, operator.add] = Field(default_factory=Usage)
    elapsed: Annotated[float, operator.add] = 0.0
    stop_reason: str | None = None
    label: Label | None = None
    verdict: str | None = Field(None, description="a person's review: approve, or a concept of theirs")

    # --- views derived from the history ---------------------------------------------------
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
