"""Labelling methods compared side by side: same LLM, same generator, same units.

- ``ours``: the line-agent graph with the configured loop (default `LoopConfig`), as a user's
  run has it: with the embedded LLM the search is the operators' (`loop.llm_proposals`).
- ``ours-llm``: ours with the LLM proposing (`llm_proposals = "on"`), whichever it is.
- ``paper``: the same graph with `LoopConfig.paper()`, the LINE paper's loop (labels by AUC).
- ``operators``: ours without the LLM: the vocabulary, then the operators' search.
- ``ours-always``, ``operators-always``: with and without the LLM, the search run for every
  unit (`loop.search_when = "always"`), also where the vocabulary already explains it.
  ``ours-llm`` and these are run by name only (``--methods all`` leaves them out).
- ``closed``: ours with the search off (`search_off`): the generator's whole sweep
  vocabulary scored for every unit, its finalists confirmed on fresh images, the best kept.
  An upper bound for closed-vocabulary labellers. The sweep's images are shared by all
  units of the layer, so its per-unit image cost is the total divided by the units.
- ``top-class``: the best control class by the criterion, on its control images; no
  images, no LLM.
- ``one-shot``: the LLM proposes once from the top-activating control classes; no loop.
- ``oracle``: the planted ground-truth label (planted suites only), the reference row.

A method name may carry a criterion (tools.criterion): ``ours@auc``, ``closed@mad``,
``paper@gated-mad``; without one, ours, closed and top-class use the configured criterion
and the paper's loop AUC, as the paper does.

Each method gets its own fresh cache folder, so no method reuses another's images or
concept bank (line-agent's bank would otherwise start from the closed vocabulary's best).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

import prompts
from agent.config import LoopConfig, Settings
from agent.runs.engine_factory import build_engine
from agent.llm import ask_structured
from agent.loop.proposal import ConceptAnswer, vocabulary_hint
from agent.runs.run import Run
from agent.runs.context import build_context
from evals.planted import PlantedUnit
from tools.criterion import Criterion
from tools.engine import Engine
from tools.scoring import unit_scores
from tools.generators.base import sweep_vocabulary

ONE_SHOT_CLASSES = 5


@dataclass
class UnitResult:
    """One method's label for one unit, what it scored on the way, and what it cost."""

    unit: int
    label: str
    scored: list[tuple[str, float]] = field(default_factory=list)  # (concept, AUC) while labelling
    images: float = 0.0
    llm_calls: int = 0
    seconds: float = 0.0
    note: str = ""
    reference: bool = False  # the ground truth itself, not a method's guess
    explained: bool | None = None  # the label's verdict (tools.verdict); None: the method gives none
    meanings: list[str] | None = None  # the meanings confirmed on fresh images (tools.meanings); None: none given


@dataclass
class EvalContext:
    settings: Settings
    units: list[int]
    chat: BaseChatModel
    work: Path  # fresh cache folders, one per method
    runs: Path  # run folders of the graph methods
    planted: list[PlantedUnit] | None = None  # ground truth, by position in `units`
    method: str = ""  # the method's name in the table (with its criterion, if any)
    criterion: str | None = None  # the method name's criterion, overriding the configured one

    def settings_for(self, loop: LoopConfig | None = None) -> Settings:
        """The method's settings: its own cache folder, and its criterion where named."""
        loop = loop or self.settings.loop
        if self.criterion:
            loop = loop.model_copy(update={"criterion": self.criterion})
        return self.settings.model_copy(update={"cache_dir": str(self.work / self.method),
                                                "runs_dir": str(self.runs), "loop": loop})

    def judge(self) -> Criterion:
        loop = self.settings_for().loop
        return loop.judge()


def split_name(method: str) -> tuple[str, str | None]:
    """'ours@auc' -> ('ours', 'auc'); 'ours' -> ('ours', None)."""
    base, _, criterion = method.partition("@")
    return base, criterion or None


Method = Callable[[EvalContext], dict[int, UnitResult]]


# --- the graph: ours and the paper's loop --------------------------------------------------------
def meaning_images(state) -> int:
    """Images the meanings' fresh-image tests rendered (tools.meanings)."""
    poly = state.label.polysemanticity if state.label else None
    return poly.images_rendered if poly is not None else 0


def graph_method(loop: Callable[[Settings], LoopConfig]) -> Method:
    """A method labelling with the graph; its image cost per unit includes the confirmation
    and an equal share of the layer-wide sweep's images. A loop without LLM calls
    (`max_llm_calls = 0`, or `llm_proposals` off, as by default with the embedded model)
    searches with the operators alone."""
    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        settings = ctx.settings_for(loop(ctx.settings))
        engine = build_engine(settings)
        run_id = f"{ctx.method.replace('@', '.')}-{time.strftime('%Y%m%d-%H%M%S')}"  # run ids take no '@'
        graph_run = Run.create(settings, ctx.units, run_id)
        proposes = settings.loop.llm_proposes(settings.llm)  # as a user's run would: the defaults
        states = graph_run.label(build_context(settings, engine, chat=ctx.chat if proposes else None))
        sweep_file = graph_run.folder / "sweep.json"
        sweep = json.loads(sweep_file.read_text()) if sweep_file.exists() else {}
        share = sweep.get("images_rendered", 0) / len(ctx.units)
        return {u: UnitResult(u, s.label.concept if s.label else "",
                              [(step.concept, step.scores.auc) for step in s.steps],
                              images=s.images_rendered() + share + meaning_images(s), llm_calls=s.usage.llm_calls,
                              seconds=round(s.elapsed + sweep.get("seconds", 0) / len(ctx.units), 2),
                              note=s.stop_reason or "", explained=s.label.explained if s.label else None,
                              meanings=[m.concept for m in s.label.polysemanticity.meanings]
                              if s.label and s.label.polysemanticity else None)
                for u, s in states.items()}

    return run


def _paper_loop(settings: Settings) -> LoopConfig:
    return LoopConfig.paper().model_copy(update={"seed": settings.loop.seed})


# --- closed vocabulary ----------------------------------------------------------------------------
def search_off(loop: LoopConfig) -> LoopConfig:
    """The loop with the search turned off: the vocabulary sweep alone (no control classes,
    no bank), its finalists confirmed on fresh images, the label chosen as ours chooses it
    (shorter labels win when as strong: `loop.simplify`); no LLM, no operators, no summary."""
    return loop.model_copy(update={"max_iterations": 0, "max_llm_calls": 0, "summary": False, "sweep": True,
                                   "init_top": 0, "init_random": 0, "bank_top": 0})


def closed(extra: list[str] = ()) -> Method:
    """The closed-vocabulary labeller: today's loop with the search off, over the generator's
    sweep vocabulary (and `extra` concepts it can draw, e.g. Broden labels)."""
    graph = graph_method(lambda s: search_off(s.loop))

    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        if extra:
            generator = build_engine(ctx.settings_for()).generator
            concepts = sweep_vocabulary(generator) + [c for c in extra if generator.interpret(c).drawable]
            ctx.work.mkdir(parents=True, exist_ok=True)
            path = ctx.work / f"{ctx.method.replace('@', '.')}-vocabulary.txt"
            path.write_text("\n".join(dict.fromkeys(c.replace("\n", " ") for c in concepts)) + "\n", encoding="utf-8")
            loop = ctx.settings.loop.model_copy(update={"sweep_concepts": str(path)})
            ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"loop": loop}))
        return graph(ctx)

    return run


# --- no generation: top class, one shot, oracle ----------------------------------------------------
def _ranked_classes(engine: Engine, unit: int) -> list[tuple[str, float]]:
    classes, means = engine.class_means()
    order = np.argsort(-means[:, unit], kind="stable")
    return [(classes[i], float(means[i, unit])) for i in order]


def top_class(ctx: EvalContext) -> dict[int, UnitResult]:
    """The best control class by the criterion, its control images against the whole control set."""
    engine, judge = build_engine(ctx.settings_for()), ctx.judge()
    control = engine.control_activations()
    labels = np.array(engine.control.labels)
    classes = engine.control.classes
    tables = [engine.score_table(control[labels == c]) for c in classes]
    return {u: UnitResult(u, judge.order([(c, unit_scores(t, u)) for c, t in zip(classes, tables)],
                                         lambda item: item[1])[0][0]) for u in ctx.units}


def one_shot(ctx: EvalContext) -> dict[int, UnitResult]:
    engine = build_engine(ctx.settings_for())
    results = {}
    for u in ctx.units:
        start = time.perf_counter()
        ranked = _ranked_classes(engine, u)
        user = prompts.render("one_shot", classes="\n".join(f"{c}: {m:.3f}" for c, m in ranked[:ONE_SHOT_CLASSES]),
                              vocabulary=vocabulary_hint(engine.generator))
        reply = ask_structured(ctx.chat, [SystemMessage(prompts.text("propose_system")), HumanMessage(user)],
                               ConceptAnswer, temperature=ctx.settings.llm.temperature, retries=ctx.settings.llm.retries)
        label, note = (reply.value.concept.strip().lower(), "") if reply.value else (ranked[0][0], "LLM failed: top class")
        results[u] = UnitResult(u, label, llm_calls=reply.attempts, seconds=round(time.perf_counter() - start, 2), note=note)
    return results


def oracle(ctx: EvalContext) -> dict[int, UnitResult]:
    return {u: UnitResult(u, p.truth.label, note="ground truth", reference=True) for u, p in zip(ctx.units, ctx.planted)}


def methods(extra_vocabulary: list[str] = ()) -> dict[str, Method]:
    """Every method by name, in the order of the results table."""
    return {
        "oracle": oracle,
        "ours": graph_method(lambda s: s.loop),
        "operators": graph_method(lambda s: s.loop.model_copy(update={"max_llm_calls": 0})),
        "ours-llm": graph_method(lambda s: s.loop.model_copy(update={"llm_proposals": "on"})),
        "ours-always": graph_method(lambda s: s.loop.model_copy(update={"search_when": "always", "llm_proposals": "on"})),
        "operators-always": graph_method(lambda s: s.loop.model_copy(update={"max_llm_calls": 0, "search_when": "always"})),
        "paper": graph_method(_paper_loop),
        "closed": closed(extra_vocabulary),
        "top-class": top_class,
        "one-shot": one_shot,
    }
