"""The graph state: one neuron's generation history, serialisable as data.

Heavy objects (models, generators, the LLM client) never live here; images are referred to
by their cache keys. A checkpoint of this state resumes a run on another day.
"""

from __future__ import annotations

import operator
from typing import Annotated, Literal

from pydantic import Field

from agent.llm import Usage
from tools.history import History, Record, Source
from tools.polysemantic import Polysemanticity
from tools.scoring import Scores
from tools.verdict import Verdict


class Proposal(Record):
    """A concept waiting to be checked and scored (agent.loop.concept_path). A "confirm" proposal is a
    finalist to score on fresh images; its reasoning says why it is a finalist."""

    concept: str
    source: Source | Literal["confirm"]
    iteration: int
    reasoning: str = ""
    strategy: str = ""
    llm_calls: int = 0
    llm_tokens: int = 0


class AtomScore(Record):
    """One atom of the layer-wide sweep (tools.generators.base.Atom) scored for this unit."""

    category: str
    value: str
    concept: str
    scores: Scores
    activations: list[float] = Field(default_factory=list, description="the unit's activation on each image (seeds 0..)")


class Label(Record):
    concept: str
    scores: Scores = Field(description="on every image it was scored on (the confirm step's fresh ones too)")
    runners_up: list[tuple[str, float]] = Field(default_factory=list, description="(concept, AUC)")
    polysemanticity: Polysemanticity | None = Field(None, description="meanings in the history (tools.polysemantic)")
    criterion: str = Field("", description="how concepts were compared (tools.criterion)")
    reason: str = Field("", description="why this concept is the label, in words")
    explained: bool | None = Field(None, description="its fresh images pass the bar (tools.verdict); None: not judged")
    confidence: Verdict | None = Field(None, description="the verdict with its evidence: AUC, MAD intervals, p")


class NeuronState(History):
    """One neuron's investigation: the history plus the loop's own state."""

    pool: list[str] = Field(default_factory=list, description="concepts shown to the LLM, LINE's pool")
    sweep: list[AtomScore] = Field(default_factory=list, description="the unit's best scores of the layer's vocabulary sweep")
    proposals: list[Proposal] = Field(default_factory=list, description="waiting to be checked and scored")
    phase: Literal["search", "summary", "confirm", "review"] = Field(
        "search", description="who proposes now: the search, the summary, the confirm step, a person in review")
    strategy: str = "refine"
    llm_retired: bool = Field(False, description="the LLM kept failing: operators propose from now on")
    usage: Annotated[Usage, operator.add] = Field(default_factory=Usage)
    elapsed: Annotated[float, operator.add] = 0.0
    stop_reason: str | None = None
    vocabulary_verdict: Verdict | None = Field(
        None, description="before the search: the best verdict of the vocabulary's finalists on fresh images "
        "(loop.search_when = unexplained); where it explains the unit, no search")
    label: Label | None = None
    verdict: str | None = Field(None, description="a person's review: approve, or a concept of theirs")
    held_unit: int | None = Field(None, exclude=True, description="the unit the thread started on (an input that "
                                  "names another unit is refused: a thread is one neuron)")

    def vocabulary_explains(self) -> bool:
        """Whether the search was skipped because a vocabulary finalist passed the verdict's bar."""
        return self.vocabulary_verdict is not None and self.vocabulary_verdict.explained

    def sweep_aucs(self) -> dict[str, float]:
        """The unit's vocabulary-sweep concepts and their AUC (on one image each): where the
        meanings' analysis also looks for a second reason to fire."""
        return {a.concept: a.scores.auc for a in self.sweep}

    def label_source(self) -> str:
        """Who proposed the label's concept: "sweep" (the vocabulary), "llm", "operator",
        "summary", "init" (a control class), "bank", "user"; "" without a label."""
        step = self.step(self.label.concept) if self.label else None
        return step.source if step is not None else ""
