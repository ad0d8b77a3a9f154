"""Reports people can look at: one self-contained HTML page per neuron, and an index.

`runs/<id>/report/index.html` lists the run's units (sortable, filterable by AUC);
`unit-<n>.html` shows one neuron: its label and scores, the label's images beside the
control images it fires on least and most, polysemanticity, the score curve (inline SVG),
the final pool, the history with the LLM's reasoning and the loop's events, ablations where
run, and the cost. Images are inlined as base64 JPEG thumbnails: no network, opens from disk.
The pages are Jinja2 templates in `agent/ui/report_templates/` (document.html around every page,
unit.html, index.html and the notebook's run table around units_table.html, macros.html); every
value is autoescaped. A network run's `report/index.html` (network.html, from
agent.ui.network_report) lists its layers and searches every unit's label, linking to the
layers' reports.

A run folder is data: unless trusted (`--trust-run`), a run whose model names code is
reported from what is stored and cached, and activations the cache lacks are left out.
"""

from __future__ import annotations

import argparse
import base64
import io
import webbrowser
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined

from tools.criterion import Criterion
from tools.errors import LineError, UntrustedCode
from tools.history import event_text
from tools.polysemantic import Polysemanticity, analyse, best_scores

if TYPE_CHECKING:
    from PIL import Image

    from agent.runs.run import Run
    from agent.loop.state import NeuronState
    from tools.engine import Engine
    from tools.history import Finalist, Step

THUMBNAIL = 112
CONTROL_IMAGES = 5
GROUP_IMAGES = 3
SOURCE_COLOURS = {"init": "#98a2b3", "sweep": "#667085", "bank": "#0e9384", "llm": "#2f5bd3", "operator": "#dc6803",
                  "summary": "#7a5af8", "user": "#18794e"}


# --- entry points ---------------------------------------------------------------------------
def write_report(run: Run, unit: int | None = None, trust: bool = False, engine: Engine | None = None) -> Path:
    """Write the report of `run` (or only `unit`'s page) under `run.folder/report`; returns
    the index (or that page). `trust`: the run's model may be loaded even when it names code;
    `engine`: the run's engine, already built (with a module in memory, say)."""
    states = run.states()
    if unit is not None and unit not in states:
        started = ", ".join(map(str, sorted(states))) or "none yet"
        raise LineError(f"unit {unit} has no history in run {run.id} (units started: {started}).",
                        "Pass one of them with --unit, or leave --unit out.")
    folder = run.folder / "report"
    folder.mkdir(parents=True, exist_ok=True)
    report = Report.of(run, trust, engine)
    views = [report.view(states[u]) for u in ([unit] if unit is not None else sorted(states))]
    for view in views:
        write_text(folder / page_name(view.state.unit), unit_page(report, view))
    if unit is not None:
        return folder / page_name(unit)
    write_text(folder / "index.html", index_page(report, views))
    return folder / "index.html"


def cmd_report(args: argparse.Namespace) -> None:
    from agent.runs.network import NetworkRun, layer_run, open_run

    run = open_run(args.run_id, "runs" if args.runs_dir is None else args.runs_dir)
    if isinstance(run, NetworkRun) and args.layer is None and args.unit is None:
        path = write_network_report(run, trust=args.trust_run)
    else:
        path = write_report(layer_run(run, args.layer), args.unit, trust=args.trust_run)
    print(f"report: {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())


def write_network_report(network, trust: bool = False) -> Path:
    """Each layer's report (`write_report`) and the network's page `report/index.html`: its
    layers, and a search over every unit's label (agent.ui.network_report); returns that page."""
    from urllib.parse import quote

    for layer in network.layers:
        write_report(network.children[layer], trust=trust)
    # the layers' reports are in runs/<id>/layers/<name>/report/, the page in runs/<id>/report/
    reports = {layer: "../" + quote((child.folder / "report").relative_to(network.folder).as_posix()) + "/"
               for layer, child in network.children.items()}
    folder = network.folder / "report"
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "index.html", network_page(network, reports))
    return folder / "index.html"


def network_page(network, reports: dict[str, str]) -> str:
    """The network's page, from the stored states (no model is loaded)."""
    from agent.ui.network_report import network_context, script_json

    context = network_context(network.layers, network.states(), {l: len(c.units) for l, c in network.children.items()},
                              reports, page_name)
    s = network.settings
    meta = (f"{s.model} · {len(network.layers)} layers · generator {s.generator.kind} · control {s.control} · "
            f"{context['labelled']} of {context['total']} units labelled")
    return render("network.html", run=network, meta=meta, **context, data=script_json(context["units"]),
                  footer=f"line-agent report of network run {network.id}; written {datetime.now():%Y-%m-%d %H:%M}.")


# --- what a page is made from -------------------------------------------------------------
class Shot(NamedTuple):
    """An image shown on a page: its data: URI, caption and the unit's activation on it; and
    where the unit fires on it (`agent.ui.overlay`), for layers with a spatial map."""

    src: str
    caption: str
    activation: float | None  # None: not in the cache, and the model may not be loaded
    overlay: str | None = None  # data: URI of the image with the unit's activation map over it
    key: str = ""  # the image's cache key


@dataclass
class UnitView:
    state: NeuronState
    poly: Polysemanticity
    criterion: Criterion  # the run's: what "best" means on the page

    @property
    def label_step(self) -> Step | None:
        label = self.state.label
        return (self.state.step(label.concept) if label else None) or self.state.best(self.criterion)

    @property
    def label_scores(self):
        """The label's scores (on every image it was scored on), else the best step's."""
        step = self.label_step
        return self.state.label.scores if self.state.label else (step.scores if step else None)


@dataclass
class Report:
    """The run, its engine (activations and images from the cache) and a text embedder."""

    run: Run
    engine: Engine
    embedder: Any
    _thumbnails: dict[str, str] = field(default_factory=dict)
    _loads: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run, trust: bool = False, engine: Engine | None = None) -> Report:
        from agent.runs.engine_factory import build_engine
        from tools.text import default_embedder

        return cls(run, engine or build_engine(run.settings, trust_code=trust), default_embedder())

    def criterion(self) -> Criterion:
        return self.run.settings.loop.judge()

    def view(self, state: NeuronState, poly: Polysemanticity | None = None) -> UnitView:
        """The unit as its page shows it, under the run's criterion (`poly` overrides the stored analysis)."""
        return UnitView(state, poly if poly is not None else self.polysemanticity(state), self.criterion())

    def polysemanticity(self, state: NeuronState) -> Polysemanticity:
        """The one stored in the label where the run stored it, else computed from the steps."""
        stored = state.label.polysemanticity if state.label else None
        return stored if stored is not None else analyse(state.steps, self.embedder)

    def thumbnail(self, key: str, load) -> str:
        """A data: URI of the image with this cache key; `load()` opens it."""
        if key not in self._thumbnails:
            self._thumbnails[key] = data_uri(load())
            self._loads[key] = load
        return self._thumbnails[key]

    def overlaid(self, unit: int, groups: list[list[Shot]], scale: float | None = None) -> tuple[list[list[Shot]], float | None]:
        """The shots with the unit's activation map over each (`agent.ui.overlay.overlaid`)."""
        from agent.ui.overlay import overlaid

        return overlaid(self.engine, unit, groups, self._loads, THUMBNAIL, scale)

    def concept_shots(self, step: Step, unit: int, limit: int | None = None) -> list[Shot]:
        """The step's images (at most `limit`) with the unit's activations."""
        from tools.engine import ImageRef

        refs = [ImageRef(k, p, s, str(self.engine.cache.image_path(k)))
                for k, p, s in zip(step.image_keys, step.prompts, step.seeds)][:limit]
        try:
            acts = [float(a) for a in self.engine.image_activations(refs)[:, unit]]
        except UntrustedCode:
            acts = [None] * len(refs)
        return [Shot(self.thumbnail(ref.key, lambda ref=ref: self.engine.load_image(ref)), step.concept, act, key=ref.key)
                for ref, act in zip(refs, acts)]

    def finalist_shots(self, finalist: Finalist) -> list[Shot]:
        """The finalist's fresh images (the confirm step's) with the unit's activations."""
        from tools.engine import ImageRef

        fresh = slice(len(finalist.seeds) - finalist.fresh, None)
        shots = []
        for key, seed, act in zip(finalist.image_keys[fresh], finalist.seeds[fresh], finalist.activations[fresh]):
            ref = ImageRef(key, self.engine.generator.prompt(finalist.concept, seed), seed,
                           str(self.engine.cache.image_path(key)))
            shots.append(Shot(self.thumbnail(key, lambda ref=ref: self.engine.load_image(ref)),
                              f"{finalist.concept} (seed {seed})", act, key=key))
        return shots

    def control_shots(self, unit: int, lowest: bool) -> list[Shot]:
        """Control images with the lowest (or highest) activation of the unit (none when the
        activations are not cached and the model may not be loaded)."""
        try:
            acts = self.engine.control_activations()[:, unit]
        except UntrustedCode:
            return []
        order = acts.argsort(kind="stable")
        chosen = order[:CONTROL_IMAGES] if lowest else order[::-1][:CONTROL_IMAGES]
        control = self.engine.control
        return [Shot(self.thumbnail(control.keys[i], lambda i=i: control.load(i)), control.labels[i], float(acts[i]),
                     key=control.keys[i]) for i in chosen]


# --- rendering ---------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def templates() -> Environment:
    """The report's Jinja2 templates, every value autoescaped."""
    env = Environment(loader=PackageLoader("agent.ui", "report_templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda value, spec="": "" if value is None else format(value, spec)
    env.globals.update(THUMBNAIL=THUMBNAIL, colour=colour, page_name=page_name, event_detail=event_text)
    return env


def render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def page_name(unit: int) -> str:
    return f"unit-{unit}.html"


def data_uri(image: Image.Image, size: int = THUMBNAIL) -> str:
    small = image.convert("RGB")
    small.thumbnail((size, size))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def colour(source: str) -> str:
    return SOURCE_COLOURS.get(source, "#475467")


def footer(run: Run) -> str:
    s = run.settings
    return (f"line-agent report of run {run.id}: {s.model} / {s.layer}, generator {s.generator.kind}, "
            f"control {s.control}; written {datetime.now():%Y-%m-%d %H:%M}.")


# --- the unit page ----------------------------------------------------------------------------
def unit_page(report: Report, view: UnitView) -> str:
    from agent.ui.summaries import llm_failures_text

    state, poly = view.state, view.poly
    context = label_context(report, view)
    groups = [g for g in poly.groups if g.auc >= poly.score_threshold]
    strips, _ = report.overlaid(state.unit, [report.concept_shots(state.step(g.best), state.unit, GROUP_IMAGES)
                                             for g in groups], context["overlay_scale"])
    senses = list(zip(groups, strips))
    pool = report.criterion().order([state.step(c) for c in state.pool if state.step(c)], lambda s: s.scores)
    timeline = sorted([(True, s) for s in state.steps] + [(False, e) for e in state.events],
                      key=lambda item: (item[1].iteration, not item[0]))
    usage = state.usage
    cost = [("images rendered", state.images_rendered()), ("images scored", state.images_used()),
            ("concepts scored", len(state.steps)), ("iterations", state.iteration),
            ("LLM calls", llm_failures_text(state)),
            ("tokens in / out", f"{usage.input_tokens} / {usage.output_tokens}"), ("time", f"{state.elapsed:.1f} s")]
    return render("unit.html", run=report.run, **context, senses=senses,
                  criterion=report.criterion().name,
                  weak=[g for g in poly.groups if g.auc < poly.score_threshold], best_scores=best_scores(state.steps),
                  plot=score_plot(state.steps, report.criterion()) if state.steps else None, pool=pool, timeline=timeline,
                  ablations=[e for e in state.events if e.kind == "ablation"], cost=cost, footer=footer(report.run))


def label_context(report: Report, view: UnitView) -> dict:
    """What `label.html` shows of a unit (its label, evidence and finalists): on the unit
    page, and in a notebook (line_agent's display)."""
    from agent.ui.summaries import labelled_without_llm, unused_answers_text

    state, step = view.state, view.label_step
    gallery = [(f"the label: {step.concept}", report.concept_shots(step, state.unit)),
               ("control images it fires on least", report.control_shots(state.unit, lowest=True)),
               ("control images it fires on most", report.control_shots(state.unit, lowest=False))] if step else []
    finalists = [(f, report.finalist_shots(f)) for f in report.criterion().order(state.finalists, lambda f: f.scores)]
    top_control = report.control_shots(state.unit, lowest=False) if finalists else []
    strips, scale = report.overlaid(state.unit, [shots for _, shots in gallery] + [shots for _, shots in finalists]
                                    + [top_control])
    gallery = [(title, strip) for (title, _), strip in zip(gallery, strips)]
    finalists = [(f, strip) for (f, _), strip in zip(finalists, strips[len(gallery):])]
    top_control = strips[-1]
    missing = any(shot.activation is None for _, shots in gallery for shot in shots) or (gallery and not gallery[1][1])
    warning = (f"labelled without the LLM (none of its {state.usage.llm_calls} answers was scored: "
               f"{unused_answers_text(state)}): operators and the initial pool chose this label"
               if labelled_without_llm(state) else "")
    return {"state": state, "step": step, "scores": view.label_scores, "poly": view.poly,
            "missing_activations": missing, "llm_warning": warning, "gallery": gallery, "finalists": finalists,
            "top_control": top_control, "overlay_scale": scale}


def score_plot(steps: list[Step], criterion: Criterion, width: int = 900, height: int = 260) -> dict:
    """Where the inline SVG draws each step's AUC, the running best by the run's criterion
    (a step line at the best step's AUC) and the iterations on the x axis."""
    left, right, top, bottom = 44, 14, 12, 34
    span = (width - left - right) / len(steps)

    def x(i: float) -> float:
        return left + (i + 0.5) * span

    def y(auc: float) -> float:
        return top + (1 - auc) * (height - top - bottom)

    running = [criterion.order(steps[: i + 1], lambda s: s.scores)[0].scores.auc for i in range(len(steps))]
    return {
        "width": width, "height": height, "left": left, "right": right,
        "levels": [(level, y(level)) for level in (0.0, 0.25, 0.5, 0.75, 1.0)],
        "best": " ".join(f"{x(i - 0.5):.1f},{y(b):.1f} {x(i + 0.5):.1f},{y(b):.1f}" for i, b in enumerate(running)),
        "ticks": [(x(i), s.iteration) for i, s in enumerate(steps) if i == 0 or s.iteration != steps[i - 1].iteration],
        "points": [(x(i), y(s.scores.auc), s) for i, s in enumerate(steps)],
        "sources": list(dict.fromkeys(s.source for s in steps)),
    }


# --- the index ------------------------------------------------------------------------------
def index_page(report: Report, views: list[UnitView]) -> str:
    run, s = report.run, report.run.settings
    pending = [u for u in run.units if u not in {v.state.unit for v in views}]
    meta = (f"{s.model} / {s.layer} · generator {s.generator.kind} · control {s.control} · "
            f"{len(views)} of {len(run.units)} units started" + (f" (not yet: {len(pending)})" if pending else ""))
    return render("index.html", run=run, meta=meta, rows=[index_entry(report, view) for view in views],
                  footer=footer(run))


def index_row(report: Report, view: UnitView) -> str:
    return render("index_row.html", row=index_entry(report, view))


def index_entry(report: Report, view: UnitView) -> dict:
    """One unit's row of the index: `summary_row`, its thumbnail and its senses."""
    from agent.ui.summaries import summary_row

    step = view.label_step
    thumb = report.concept_shots(step, view.state.unit, 1)[0] if step else None
    return {**summary_row(view.state, report.criterion()), "thumb": thumb, "poly": view.poly.polysemantic, "senses": view.poly.senses}
