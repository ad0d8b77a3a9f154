"""The four typed tools an LLM agent calls to investigate one neuron.

Thin wrappers over the shared `Engine`: the same rendering, caching and scoring as the CLI
and the autonomous graph. The heavy runtime comes from the graph's runtime context through
`ToolRuntime`, typed by `ToolContext` (what the tools need of it, nothing of the agent's
own context class); the neuron and its history from the graph state.
Tools that add to the history return a `Command` that appends a Step or an Event, so the
graph state stays the one generation history. Bad arguments raise `ToolArgumentError` (or
fail validation), which the tool node hands back to the LLM as an error message.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import numpy as np
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from pydantic import AfterValidator, BaseModel, Field

from tools.concepts import ConceptRules, text_problem, tidy_concept
from tools.criterion import Criterion
from tools.engine import Engine
from tools.errors import LineError
from tools.history import Event, History, Step, event_text, score_step
from tools import meanings
from tools.text import normalise

class ToolContext(Protocol):
    """What the tools need of the graph's runtime context."""

    engine: Engine  # renders, caches and scores
    rules: ConceptRules  # the one rule for an acceptable concept (tools.concepts)
    criterion: Criterion  # what "best" means in this run (tools.criterion)


USER_CALL_PREFIX = "user-"  # tool calls a person made with a slash command, not the LLM
PROBE_CALL_PREFIX = "probe-"  # tool calls the chat graph makes itself to test an attribute (source "operator")
MAX_IMAGES = 16
ABLATION_STILL_HIGH_AUC = 0.8  # ablated images scoring above this still carry what the unit wants
ABLATION_MIN_DROP = 0.2  # a drop below this share of the scene's excess over control is no effect
ABLATION_MIN_SCENE_AUC = 0.6  # a scene scoring below this does not drive the unit to begin with


class ToolArgumentError(ToolException):
    """An argument the LLM can fix; its message goes back to the LLM."""


# --- arguments -----------------------------------------------------------------------------
def _concept(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(f"{problem}: give 1 to 6 words")
    return tidy_concept(value).lower()


Concept = Annotated[str, AfterValidator(_concept)]


class GenerateImagesArgs(BaseModel):
    concepts: list[Concept] = Field(min_length=1, max_length=8, description="concepts to draw, 1 to 6 words each")
    n: int = Field(4, ge=1, le=MAX_IMAGES, description="images per concept")
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] | None = Field(None, max_length=MAX_IMAGES,
                                                                      description="explicit seeds (overrides n)")


class ScoreConceptArgs(BaseModel):
    concept: Concept = Field(description="the visual concept to test, 1 to 6 words, e.g. 'red stripes'")
    unit: int | None = Field(None, description="leave out to study this neuron; only to compare another unit of the layer")


class InspectHistoryArgs(BaseModel):
    top: int = Field(5, ge=1, le=50, description="how many best concepts and recent steps to list")
    contains: str | None = Field(None, description="only concepts containing this text")
    since_iteration: int | None = Field(None, ge=0, description="only steps and events from this iteration on")


class AblateConceptArgs(BaseModel):
    concept: Concept = Field(description="the concept to remove from the scene, e.g. 'red' or 'stripes'")
    unit: int | None = Field(None, description="leave out to study this neuron; only to compare another unit of the layer")
    scene: Concept | None = Field(None, description="the scene to remove it from; default: the best scored concept "
                                                "that mentions it, else the concept itself")


# --- results -------------------------------------------------------------------------------
class Result(BaseModel):
    def text(self) -> str:
        """What the LLM reads."""
        return self.model_dump_json(exclude_none=True)


class ImageInfo(Result):
    key: str
    path: str
    seed: int
    prompt: str


class ImageSet(Result):
    concept: str
    understood: list[str]
    ignored: list[str]
    images: list[ImageInfo]
    rendered: int = Field(description="images that had to be generated (the rest came from the cache)")


class ImagesResult(Result):
    sets: list[ImageSet]

    def text(self) -> str:
        return "\n".join(
            f"{s.concept!r}: {len(s.images)} images ({s.rendered} new), ids {', '.join(i.key[:12] for i in s.images)}"
            + (f"; ignored words: {', '.join(s.ignored)}" if s.ignored else "") for s in self.sets)


class ScoreResult(Result):
    concept: str
    unit: int
    auc: float
    mad: float
    mean: float
    p: float
    images: int
    rendered: int
    iteration: int | None = Field(None, description="where it entered the history (None: another unit, not recorded)")
    note: str = ""

    def text(self) -> str:
        where = f"history iteration {self.iteration}" if self.iteration is not None else "not recorded"
        line = (f"{self.concept!r} on unit {self.unit}: AUC {self.auc:.3f}, MAD {self.mad:.2f}, "
                f"mean activation {self.mean:.4f}, p {self.p:.1e} ({self.images} images, {self.rendered} new; {where})")
        return f"{line}. {self.note}" if self.note else line

    @classmethod
    def of_step(cls, step: Step, unit: int, note: str = "") -> "ScoreResult":
        s = step.scores
        return cls(concept=step.concept, unit=unit, auc=s.auc, mad=s.mad, mean=s.mean, p=s.p,
                   images=len(step.image_keys), rendered=step.images_rendered, iteration=step.iteration, note=note)


class HistoryResult(Result):
    table: str

    def text(self) -> str:
        return self.table


class AblationResult(Result):
    concept: str
    scene: str
    unit: int
    seeds: list[int]
    prompts_with: list[str]
    prompts_without: list[str]
    with_concept: list[float] = Field(description="unit activation per seed, concept present")
    without_concept: list[float] = Field(description="unit activation per seed, concept removed")
    drop_mean: float
    drop_std: float
    auc_with: float
    auc_without: float
    removed: bool = Field(description="whether removing the concept took away what the unit responds to")
    verdict: str

    def text(self) -> str:
        drops = ", ".join(f"{d:.3f}" for d in np.subtract(self.with_concept, self.without_concept))
        return (f"ablate {self.concept!r} from {self.scene!r} (unit {self.unit}, seeds {self.seeds}): "
                f"{self.prompts_with[0]!r} -> {self.prompts_without[0]!r}; activation drop "
                f"{self.drop_mean:.4f} ± {self.drop_std:.4f} (per seed {drops}); AUC vs control "
                f"{self.auc_with:.3f} -> {self.auc_without:.3f}. {self.verdict}")


# --- helpers -------------------------------------------------------------------------------
def history_of(state: Any) -> History:
    """The neuron's history from a graph state (a History subclass or a dict of fields)."""
    if isinstance(state, History):
        return state
    return History.model_validate({k: v for k, v in dict(state).items() if k in History.model_fields})


def source_of(runtime: ToolRuntime) -> str:
    call_id = str(runtime.tool_call_id)
    return "user" if call_id.startswith(USER_CALL_PREFIX) else "operator" if call_id.startswith(PROBE_CALL_PREFIX) else "llm"


def _unit(runtime: ToolRuntime, unit: int | None) -> int:
    history = history_of(runtime.state)
    chosen = history.unit if unit is None else unit
    try:
        return runtime.context.engine.check_unit(chosen)
    except LineError as error:
        raise ToolArgumentError(f"unit {chosen}: {error.problem} The neuron under study is unit {history.unit}.")


def _answer(runtime: ToolRuntime, tool_name: str, result: Result) -> ToolMessage:
    """The tool call's answer: text for the LLM, the result as data for programs."""
    return ToolMessage(result.text(), name=tool_name, tool_call_id=runtime.tool_call_id, artifact=result.model_dump())


def _recorded(runtime: ToolRuntime, tool_name: str, result: Result, update: dict) -> Command:
    """A state update that adds to the history and answers the tool call."""
    return Command(update=update | {"messages": [_answer(runtime, tool_name, result)]})


def _refs_info(refs) -> list[ImageInfo]:
    return [ImageInfo(key=r.key, path=r.path, seed=r.seed, prompt=r.prompt) for r in refs]


# --- the tools -----------------------------------------------------------------------------
@tool(args_schema=GenerateImagesArgs)
def generate_images(concepts: list[str], n: int = 4, seeds: list[int] | None = None,
                    runtime: ToolRuntime = None) -> ToolMessage:
    """Draw images of one or more concepts with the image generator (cached: a concept drawn
    before costs nothing). Returns each image's id and file path, and which words of the
    concept the generator understood or ignored. It does not score anything: use
    score_concept to measure how the neuron responds."""
    engine = runtime.context.engine
    sets = []
    for concept in concepts:
        _acceptable(runtime.context, concept)
        interpretation = engine.generator.interpret(concept)
        refs, rendered = engine.concept_images(concept, seeds or engine.seeds(n))
        sets.append(ImageSet(concept=concept, understood=interpretation.understood, ignored=interpretation.ignored,
                             images=_refs_info(refs), rendered=rendered))
    return _answer(runtime, generate_images.name, ImagesResult(sets=sets))


@tool(args_schema=ScoreConceptArgs)
def score_concept(concept: str, unit: int | None = None, runtime: ToolRuntime = None) -> Command | ToolMessage:
    """Measure how strongly the neuron responds to a visual concept: the concept is drawn
    as images and the neuron's activations on them are compared with a control set of
    ordinary images. AUC near 1.0 means the concept excites the neuron far more than
    ordinary images; 0.5 means no effect. MAD is the mean difference in control standard
    deviations; p is a one-sided Mann-Whitney test. The result enters the history. Asking
    again for a concept already scored gives you a new, untried concept's score instead."""
    history, chosen = history_of(runtime.state), _unit(runtime, unit)
    ctx = runtime.context
    if chosen != history.unit:  # another unit: scored from the same (cached) images, not recorded
        evidence = ctx.engine.evaluate(concept)
        s = evidence.scores(chosen)
        result = ScoreResult(concept=concept, unit=chosen, auc=s.auc, mad=s.mad, mean=s.mean, p=s.p,
                             images=len(evidence.images), rendered=evidence.rendered,
                             note=f"the history is unit {history.unit}'s; this score is not recorded in it")
        return _answer(runtime, score_concept.name, result)
    iteration = history.call_iterations.get(runtime.tool_call_id, history.iteration)
    step = score_step(ctx.engine, chosen, concept, source_of(runtime), iteration)
    return _recorded(runtime, score_concept.name, ScoreResult.of_step(step, chosen),
                     {"steps": [step], "elapsed": step.seconds})


@tool(args_schema=InspectHistoryArgs)
def inspect_history(top: int = 5, contains: str | None = None, since_iteration: int | None = None,
                    runtime: ToolRuntime = None) -> ToolMessage:
    """Read the investigation so far as a compact table: the best-scoring concepts, the
    most recent steps, rejected duplicates, stalls and ablations, and the image
    generator's words not yet used in any concept. Use it before proposing something new."""
    history = history_of(runtime.state)
    ctx: ToolContext = runtime.context
    table = history_table(history, ctx.engine.generator.vocabulary(), ctx.criterion, top, contains, since_iteration)
    label = getattr(runtime.state, "label", None) if not isinstance(runtime.state, dict) else runtime.state.get("label")
    stored = getattr(label, "polysemanticity", None)
    best = history.best(ctx.criterion)
    sweep = getattr(runtime.state, "sweep_aucs", None)  # a loop's state also holds the unit's vocabulary sweep
    found = stored if stored is not None and stored.method == "evidence" else meanings.analyse(
        ctx.engine, history.unit, history.steps, best.concept if best else None, also=sweep() if sweep else None)
    table += f"\nmeanings (fresh images, ablations): {found.describe()}"
    return _answer(runtime, inspect_history.name, HistoryResult(table=table))


@tool(args_schema=AblateConceptArgs)
def ablate_concept(concept: str, unit: int | None = None, scene: str | None = None,
                   runtime: ToolRuntime = None) -> Command:
    """Counterfactual test of a concept: draw a scene with the concept and the very same
    scene without it (same seeds), and measure how much the neuron's activation drops.
    A large drop means the concept itself drives the neuron; no drop means something else
    in the scene does (or the generator could not remove it). The result enters the history."""
    history, chosen = history_of(runtime.state), _unit(runtime, unit)
    scene = scene or default_scene(history, concept, runtime.context.criterion)
    _acceptable(runtime.context, scene, "the scene ")
    result = ablate(runtime.context.engine, concept, scene, chosen)
    event = Event(iteration=history.iteration, kind="ablation", concept=concept,
                  detail=f"unit {chosen}, scene {scene!r}: drop {result.drop_mean:.4f} ± {result.drop_std:.4f}, "
                         f"AUC {result.auc_with:.3f} -> {result.auc_without:.3f}; "
                         f"{'removed' if result.removed else 'not removed'}")
    return _recorded(runtime, ablate_concept.name, result, {"events": [event]})


TOOLS: list[BaseTool] = [generate_images, score_concept, inspect_history, ablate_concept]


# --- the work behind the tools -------------------------------------------------------------
def default_scene(history: History, concept: str, criterion: Criterion) -> str:
    """The best scored concept (by the run's criterion) that mentions every word of
    `concept`, else the concept."""
    words = set(normalise(concept).split())
    return next((s.concept for s in history.ranked(criterion) if words <= set(normalise(s.concept).split())), concept)


def _acceptable(ctx: ToolContext, concept: str, what: str = "") -> None:
    """Raise a ToolArgumentError for a concept the one rule refuses (tools.concepts);
    `what` names the argument where it is not the concept ("the scene ")."""
    verdict = ctx.rules.accept(concept)
    if not verdict.accepted:
        raise ToolArgumentError(f"{what}{concept!r} cannot be drawn: {verdict.reason}; "
                                "use inspect_history to see the words the generator knows.")


def ablate(engine, concept: str, scene: str, unit: int) -> AblationResult:
    """The scene with and without the concept at the same seeds, scored for `unit`."""
    seeds = engine.seeds()
    prompts_with = [engine.generator.prompt(scene, s) for s in seeds]
    prompts_without = [engine.generator.ablate(p, concept) for p in prompts_with]
    refs_with, _ = engine.render(prompts_with, seeds)
    refs_without, _ = engine.render(prompts_without, seeds)
    acts_with, acts_without = engine.image_activations(refs_with), engine.image_activations(refs_without)
    drops = acts_with[:, unit] - acts_without[:, unit]
    auc_with = float(engine.score_table(acts_with, [unit])["auc"][0])
    auc_without = float(engine.score_table(acts_without, [unit])["auc"][0])
    excess = float(acts_with[:, unit].mean() - engine.control_activations()[:, unit].mean())
    removed, verdict = _ablation_verdict(concept, scene, prompts_with == prompts_without, excess,
                                         float(drops.mean()), auc_with, auc_without)
    return AblationResult(
        concept=concept, scene=scene, unit=unit, seeds=seeds, prompts_with=prompts_with, prompts_without=prompts_without,
        with_concept=acts_with[:, unit].tolist(), without_concept=acts_without[:, unit].tolist(),
        drop_mean=float(drops.mean()), drop_std=float(drops.std()), auc_with=auc_with, auc_without=auc_without,
        removed=removed, verdict=verdict)


def _ablation_verdict(concept: str, scene: str, unchanged: bool, excess: float, drop: float,
                      auc_with: float, auc_without: float) -> tuple[bool, str]:
    """Whether removing the concept removed what drives the unit, in words. `excess` is the
    scene's mean activation above the control mean (activations may be signed)."""
    if unchanged:
        return False, (f"The ablation did not remove {concept!r}: the generator drew the same scene without it "
                       f"(is {concept!r} in {scene!r}?). Nothing is learned from this comparison.")
    if auc_with < ABLATION_MIN_SCENE_AUC or excess <= 0:
        return False, (f"The unit does not respond to {scene!r} more than to control images (AUC {auc_with:.2f}): "
                       "there is nothing for the ablation to remove.")
    if auc_without > ABLATION_STILL_HIGH_AUC:
        return False, (f"The ablation did not remove what the unit responds to: without {concept!r} the images "
                       f"still score AUC {auc_without:.2f} against control. Something else in the scene drives it.")
    if drop / excess < ABLATION_MIN_DROP:
        return False, (f"Removing {concept!r} barely changes the activation ({drop / excess:.0%} of its excess over "
                       "control): it is not what drives the unit.")
    return True, (f"Removing {concept!r} takes away {drop / excess:.0%} of the activation's excess over control: "
                  f"{concept!r} drives the unit.")


def history_table(history: History, vocabulary: dict[str, list[str]], criterion: Criterion, top: int = 5,
                  contains: str | None = None, since_iteration: int | None = None) -> str:
    """The history as compact text: best concepts (by the run's criterion), recent steps,
    events, untried words."""
    since = since_iteration or 0
    steps = [s for s in history.steps if s.iteration >= since and (not contains or contains.lower() in s.concept)]
    events = [e for e in history.events if e.iteration >= since and (not contains or contains.lower() in e.concept)]
    lines = [f"unit {history.unit}: {len(history.steps)} concepts scored, {len(history.events)} events, "
             f"iteration {history.iteration}"]
    ranked = criterion.order(steps, lambda s: s.scores)
    lines += _section("best concepts", [_step_row(s) for s in ranked[:top]], "it  concept | AUC | MAD | source")
    lines += _section("recent steps", [_step_row(s) for s in steps[-top:]], "it  concept | AUC | MAD | source")
    lines += _section("events", [f"{e.iteration:>2}  {e.kind}: {e.concept} {event_text(e)}".rstrip()
                                 for e in events[-2 * top:]], "it  kind: concept detail")
    lines += _section("finalists, confirmed on fresh images", [finalist_row(f) for f in history.finalists],
                      "concept | AUC | MAD on all its images | fresh activations | why")
    untried = untried_words(history.tried(), vocabulary)
    lines += _section("not tried yet", [f"{category}: {', '.join(words)}" for category, words in untried.items()])
    return "\n".join(lines)


def finalist_row(finalist) -> str:
    fresh = ", ".join(f"{a:.3g}" for a in finalist.activations[-finalist.fresh:])
    return (f"{finalist.concept} | {finalist.scores.auc:.3f} | {finalist.scores.mad:.2f} ± {finalist.scores.mad_se:.2f} "
            f"| {fresh} | {finalist.why}")


def _section(title: str, rows: list[str], header: str = "") -> list[str]:
    if not rows:
        return [f"{title}: none"]
    return [f"{title}:" + (f" ({header})" if header else "")] + [f"  {row}" for row in rows]


def _step_row(step: Step) -> str:
    return f"{step.iteration:>2}  {step.concept} | {step.scores.auc:.3f} | {step.scores.mad:.2f} | {step.source}"


def untried_words(tried: list[str], vocabulary: dict[str, list[str]]) -> dict[str, list[str]]:
    """The generator's words (by category) that appear in none of the tried concepts."""
    used = [set(normalise(c).split()) for c in tried]
    result = {}
    for category, words in vocabulary.items():
        fresh = [w for w in words if not any(set(normalise(w).split()) <= u for u in used)]
        if fresh:
            result[category] = fresh
    return result
