"""The labelling graph's runtime context: everything heavy a run needs, never checkpointed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

from agent.config import LoopConfig
from agent.loop.state import NeuronState
from tools.concepts import ConceptRules
from tools.criterion import Criterion
from tools.engine import Engine
from tools.generators.base import Atom


@dataclass
class LineContext:
    """Everything heavy a run needs; never checkpointed.

    `rules` decides whether a concept may be scored (tools.concepts, the one rule);
    `criterion` what "best" means for the run (tools.criterion, everywhere it is shown).
    """

    engine: Engine
    rules: ConceptRules
    loop: LoopConfig
    chat: BaseChatModel | None = None
    temperature: float = 0.7
    llm_retries: int = 2
    criterion: Criterion = field(default_factory=Criterion)
    atoms: list[Atom] = field(default_factory=list)  # the layer-wide sweep's concepts

    def rng(self, state: NeuronState, salt: int = 0) -> random.Random:
        """The random stream of `state`'s unit and iteration (reproducible on resume)."""
        return random.Random(self.loop.seed * 1_000_003 + state.unit * 7_919 + state.iteration * 31 + salt)
