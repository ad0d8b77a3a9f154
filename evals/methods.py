"""Labelling methods compared side by side: same LLM, same generator, same units.

- ``ours``: the line-agent graph with the configured loop (default `LoopConfig`).
- ``paper``: the same graph with `LoopConfig.paper()`, the LINE paper's loop (labels by AUC).
- ``closed``: every concept of a closed vocabulary scored, the best kept after the same
  confirmation as ours: the same finalists, less the summary. An upper bound for
  closed-vocabulary labellers. Images are shared by all units of the layer, so its per-unit
  image cost is the total divided by the number of units.
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

import itertools
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
from tools.history import confirm_finalists
from tools.scoring import unit_scores
from tools.generators.procedural import (
    COLOURS,
    PATTERNS,
    SHAPES,
    TEXTURES,
    ProceduralGenerator,
)

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
    and an equal share of the layer-wide sweep's images."""
    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        settings = ctx.settings_for(loop(ctx.settings))
        engine = build_engine(settings)
        run_id = f"{ctx.method.replace('@', '.')}-{time.strftime('%Y%m%d-%H%M%S')}"  # run ids take no '@'
        graph_run = Run.create(settings, ctx.units, run_id)
        states = graph_run.label(build_context(settings, engine, chat=ctx.chat))
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
def closed_vocabulary(generator: ProceduralGenerator, extra: list[str] = ()) -> list[str]:
    """Colours, patterns, shapes and textures alone, colour x pattern, colour x shape,
    orientation and size x pattern, colour x orientation x stripes, colour x size x polka
    dots, black and white x pattern, shape or texture (and its sizes x pattern), then `extra`
    concepts (e.g. Broden labels) the generator can draw; one concept per canonical scene
    (same scene, same images)."""
    colours, shapes = list(COLOURS), [s + ("es" if s.endswith(("s", "x")) else "s") for s in SHAPES]
    kinds = list(PATTERNS) + shapes + ["blobs"]
    orientations, sizes = ("horizontal", "vertical", "diagonal"), ("small", "large")
    candidates = itertools.chain(
        colours, [f"plain {c}" for c in colours], kinds, TEXTURES,
        (f"{c} {k}" for c in colours for k in kinds),
        (f"{o} {p}" for o in orientations for p in PATTERNS),
        (f"{s} {p}" for s in sizes for p in PATTERNS),
        (f"{c} {o} stripes" for c in colours for o in orientations),
        (f"{s} {c} polka dots" for c in colours for s in sizes),
        (f"black and white {k}" for k in [*kinds, *TEXTURES]), (f"{s} black and white {p}" for s in sizes for p in PATTERNS), extra,
    )
    by_scene: dict[str, str] = {}
    for concept in candidates:
        scene = generator.interpret(concept).canonical
        if scene and scene not in by_scene:
            by_scene[scene] = concept
    return list(by_scene.values())


def closed(extra: list[str] = ()) -> Method:
    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        settings = ctx.settings_for()
        engine, judge = build_engine(settings), ctx.judge()
        engine.control_activations()
        start = time.perf_counter()
        vocabulary = closed_vocabulary(ProceduralGenerator(), extra)
        evidence = engine.evaluate_many(vocabulary)  # rendered together, batched forwards
        rendered = sum(e.rendered for e in evidence)
        per_unit = (time.perf_counter() - start) / len(ctx.units)
        results = {}
        for u in ctx.units:
            start = time.perf_counter()
            scored = [(e.concept, e.scores(u)) for e in evidence]
            ranked = judge.order(scored, lambda item: item[1])
            label, confirmed, note = ranked[0][0], 0, f"{len(scored)} concepts, images shared by units"
            if settings.loop.confirm:
                top = [(c, why) for (c, _), why in judge.shortlist(scored, lambda item: item[1], lambda item: item[0],
                                                                  settings.loop.confirm_top)]
                finalists = confirm_finalists(engine, u, top, settings.loop.confirm_images)
                label = judge.choose(finalists, lambda f: f.scores, lambda f: f.concept).winner.concept
                confirmed = sum(f.images_rendered for f in finalists)
            results[u] = UnitResult(u, label, [(c, s.auc) for c, s in scored], images=rendered / len(ctx.units) + confirmed,
                                    seconds=round(per_unit + time.perf_counter() - start, 2), note=note)
        return results

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
        "paper": graph_method(_paper_loop),
        "closed": closed(extra_vocabulary),
        "top-class": top_class,
        "one-shot": one_shot,
    }
