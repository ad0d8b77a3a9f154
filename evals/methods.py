"""Labelling methods compared side by side: same LLM, same generator, same units.

- ``ours``: the line-agent graph with the configured loop (default `LoopConfig`).
- ``paper``: the same graph with `LoopConfig.paper()`, the LINE paper's loop.
- ``closed``: every concept of a closed vocabulary scored, the best kept (an upper bound
  for closed-vocabulary labellers). Images are shared by all units of the layer, so its
  per-unit image cost is the total divided by the number of units.
- ``top-class``: the control class with the highest mean activation; no images, no LLM.
- ``one-shot``: the LLM proposes once from the top-activating control classes; no loop.
- ``oracle``: the planted ground-truth label (planted suites only), the reference row.

Each method gets its own fresh cache folder, so no method reuses another's images or
concept bank (line-agent's bank would otherwise start from the closed vocabulary's best).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

import prompts
from agent.config import LoopConfig, Settings
from agent.engines import build_engine
from agent.llm import ask_structured
from agent.nodes import ConceptAnswer, vocabulary_hint
from agent.runner import Run, build_context
from evals.planted import PlantedUnit
from tools.engine import Engine
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


@dataclass
class EvalContext:
    settings: Settings
    units: list[int]
    chat: BaseChatModel
    work: Path  # fresh cache folders, one per method
    runs: Path  # run folders of the graph methods
    planted: list[PlantedUnit] | None = None  # ground truth, by position in `units`

    def settings_for(self, method: str, **changes) -> Settings:
        return self.settings.model_copy(update={"cache_dir": str(self.work / method),
                                                "runs_dir": str(self.runs), **changes})


Method = Callable[[EvalContext], dict[int, UnitResult]]


# --- the graph: ours and the paper's loop --------------------------------------------------------
def graph_method(name: str, loop: Callable[[Settings], LoopConfig]) -> Method:
    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        settings = ctx.settings_for(name, loop=loop(ctx.settings))
        engine = build_engine(settings)
        graph_run = Run.create(settings, ctx.units, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        states = graph_run.label(build_context(settings, engine, chat=ctx.chat))
        return {u: UnitResult(u, s.label.concept if s.label else "",
                              [(step.concept, step.scores.auc) for step in s.steps],
                              images=s.images_rendered(), llm_calls=s.usage.llm_calls,
                              seconds=round(s.elapsed, 2), note=s.stop_reason or "")
                for u, s in states.items()}

    return run


def _paper_loop(settings: Settings) -> LoopConfig:
    return LoopConfig.paper().model_copy(update={"seed": settings.loop.seed})


# --- closed vocabulary ----------------------------------------------------------------------------
def closed_vocabulary(generator: ProceduralGenerator, extra: list[str] = ()) -> list[str]:
    """Colours, patterns, shapes and textures alone, colour x pattern, colour x shape,
    orientation and size x pattern, then `extra` concepts (e.g. Broden labels) the generator
    can draw; one concept per canonical scene (same scene, same images)."""
    colours, shapes = list(COLOURS), [s + ("es" if s.endswith(("s", "x")) else "s") for s in SHAPES]
    kinds = list(PATTERNS) + shapes + ["blobs"]
    candidates = itertools.chain(
        colours, [f"plain {c}" for c in colours], kinds, TEXTURES,
        (f"{c} {k}" for c in colours for k in kinds),
        (f"{o} {p}" for o in ("horizontal", "vertical", "diagonal") for p in PATTERNS),
        (f"{s} {p}" for s in ("small", "large") for p in PATTERNS), extra,
    )
    by_scene: dict[str, str] = {}
    for concept in candidates:
        scene = generator.interpret(concept).canonical
        if scene and scene not in by_scene:
            by_scene[scene] = concept
    return list(by_scene.values())


def closed(extra: list[str] = ()) -> Method:
    def run(ctx: EvalContext) -> dict[int, UnitResult]:
        engine = build_engine(ctx.settings_for("closed"))
        engine.control_activations()
        start = time.perf_counter()
        vocabulary = closed_vocabulary(ProceduralGenerator(), extra)
        images = [engine.concept_images(concept) for concept in vocabulary]
        rendered = sum(n for _, n in images)
        acts = engine.image_activations([ref for refs, _ in images for ref in refs])  # batched forwards
        bounds = np.cumsum([0] + [len(refs) for refs, _ in images])
        tables = [engine.score_table(acts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        per_unit = (time.perf_counter() - start) / len(ctx.units)
        results = {}
        for u in ctx.units:
            rows = [(concept, float(t["auc"][u]), float(t["mad"][u])) for concept, t in zip(vocabulary, tables)]
            best = max(rows, key=lambda r: (r[1], r[2]))
            results[u] = UnitResult(u, best[0], [(c, a) for c, a, _ in rows], images=rendered / len(ctx.units),
                                    seconds=round(per_unit, 2), note=f"{len(rows)} concepts, images shared by units")
        return results

    return run


# --- no generation: top class, one shot, oracle ----------------------------------------------------
def _ranked_classes(engine: Engine, unit: int) -> list[tuple[str, float]]:
    classes, means = engine.class_means()
    order = np.argsort(-means[:, unit], kind="stable")
    return [(classes[i], float(means[i, unit])) for i in order]


def top_class(ctx: EvalContext) -> dict[int, UnitResult]:
    engine = build_engine(ctx.settings_for("top-class"))
    return {u: UnitResult(u, _ranked_classes(engine, u)[0][0]) for u in ctx.units}


def one_shot(ctx: EvalContext) -> dict[int, UnitResult]:
    engine = build_engine(ctx.settings_for("one-shot"))
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
        "ours": graph_method("ours", lambda s: s.loop),
        "paper": graph_method("paper", _paper_loop),
        "closed": closed(extra_vocabulary),
        "top-class": top_class,
        "one-shot": one_shot,
    }
