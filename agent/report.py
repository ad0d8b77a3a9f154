"""Reports people can look at: one self-contained HTML page per neuron, and an index.

`runs/<id>/report/index.html` lists the run's units (sortable, filterable by AUC);
`unit-<n>.html` shows one neuron: its label and scores, the label's images beside the
control images it fires on least and most, polysemanticity, the score curve (inline SVG),
the final pool, the history with the LLM's reasoning and the loop's events, ablations where
run, and the cost. Images are inlined as base64 JPEG thumbnails: no network, opens from disk.
Templates live in `agent/report_templates/`; values are escaped with `html.escape`.

A run folder is data: unless trusted (`--trust-run`), a run whose model names code is
reported from what is stored and cached, and activations the cache lacks are left out.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import webbrowser
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, NamedTuple

from tools.errors import LineError, UntrustedCode
from tools.polysemantic import Polysemanticity, analyse, best_scores

if TYPE_CHECKING:
    from PIL import Image

    from agent.runner import Run
    from agent.state import NeuronState
    from tools.engine import Engine
    from tools.history import Event, Step

THUMBNAIL = 112
CONTROL_IMAGES = 5
GROUP_IMAGES = 3
SOURCE_COLOURS = {"init": "#98a2b3", "bank": "#0e9384", "llm": "#2f5bd3", "operator": "#dc6803",
                  "summary": "#7a5af8", "user": "#18794e"}
esc = html.escape


# --- entry points ---------------------------------------------------------------------------
def write_report(run: Run, unit: int | None = None, trust: bool = False) -> Path:
    """Write the report of `run` (or only `unit`'s page) under `run.folder/report`; returns
    the index (or that page). `trust`: the run's model may be loaded even when it names code."""
    states = run.states()
    if unit is not None and unit not in states:
        started = ", ".join(map(str, sorted(states))) or "none yet"
        raise LineError(f"unit {unit} has no history in run {run.id} (units started: {started}).",
                        "Pass one of them with --unit, or leave --unit out.")
    folder = run.folder / "report"
    folder.mkdir(parents=True, exist_ok=True)
    report = Report.of(run, trust)
    views = [UnitView(states[u], report.polysemanticity(states[u])) for u in ([unit] if unit is not None else sorted(states))]
    for view in views:
        write_text(folder / page_name(view.state.unit), unit_page(report, view))
    if unit is not None:
        return folder / page_name(unit)
    write_text(folder / "index.html", index_page(report, views))
    return folder / "index.html"


def cmd_report(args: argparse.Namespace) -> None:
    from agent.runner import Run

    path = write_report(Run.open(args.run_id, args.runs_dir or "runs"), args.unit, trust=args.trust_run)
    print(f"report: {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())


# --- what a page is made from -------------------------------------------------------------
class Shot(NamedTuple):
    """An image shown on a page: its data: URI, caption and the unit's activation on it."""

    src: str
    caption: str
    activation: float | None  # None: not in the cache, and the model may not be loaded


@dataclass
class UnitView:
    state: NeuronState
    poly: Polysemanticity

    @property
    def label_step(self) -> Step | None:
        label = self.state.label
        return (self.state.step(label.concept) if label else None) or self.state.best()


@dataclass
class Report:
    """The run, its engine (activations and images from the cache) and a text embedder."""

    run: Run
    engine: Engine
    embedder: Any
    _thumbnails: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run, trust: bool = False) -> Report:
        from agent.engines import build_engine
        from tools.text import default_embedder

        return cls(run, build_engine(run.settings, trust_code=trust), default_embedder())

    def polysemanticity(self, state: NeuronState) -> Polysemanticity:
        """The one stored in the label where the run stored it, else computed from the steps."""
        stored = getattr(state.label, "polysemanticity", None)
        return stored if isinstance(stored, Polysemanticity) else analyse(state.steps, self.embedder)

    def thumbnail(self, key: str, load) -> str:
        """A data: URI of the image with this cache key; `load()` opens it."""
        if key not in self._thumbnails:
            self._thumbnails[key] = data_uri(load())
        return self._thumbnails[key]

    def concept_shots(self, step: Step, unit: int, limit: int | None = None) -> list[Shot]:
        """The step's images (at most `limit`) with the unit's activations."""
        from tools.engine import ImageRef

        refs = [ImageRef(k, p, s, str(self.engine.cache.image_path(k)))
                for k, p, s in zip(step.image_keys, step.prompts, step.seeds)][:limit]
        try:
            acts = [float(a) for a in self.engine.image_activations(refs)[:, unit]]
        except UntrustedCode:
            acts = [None] * len(refs)
        return [Shot(self.thumbnail(ref.key, lambda ref=ref: self.engine.load_image(ref)), step.concept, act)
                for ref, act in zip(refs, acts)]

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
        return [Shot(self.thumbnail(control.keys[i], lambda i=i: control.load(i)), control.labels[i], float(acts[i]))
                for i in chosen]


# --- small HTML pieces ------------------------------------------------------------------------
def document(title: str, body: str) -> str:
    """A whole self-contained HTML page: the shared head and style around `body`."""
    return Template(template("document.html")).substitute(title=esc(title), style=template("style.css"), body=body)


def template(name: str) -> str:
    return (files("agent") / "report_templates" / name).read_text()


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


def image(shot: Shot) -> str:
    return f'<img src="{shot.src}" alt="{esc(shot.caption)}" width="{THUMBNAIL}" height="{THUMBNAIL}">'


def strip(shots: list[Shot]) -> str:
    """Images in a row, each captioned with the unit's activation."""
    figures = "".join(f"<figure>{image(s)}<figcaption><b>{'?' if s.activation is None else format(s.activation, '.3g')}"
                      f"</b><br>{esc(s.caption)}</figcaption></figure>" for s in shots)
    return f'<div class="strip">{figures}</div>'


def section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<section><h2>{esc(title)}</h2>{note_html}{body}</section>"


def badge(name: str, value: str, css: str = "badge") -> str:
    return f'<span class="{css}">{esc(name)} <b>{esc(value)}</b></span>'


def table(header: list[str], rows: list[str], numeric: set[int] = frozenset()) -> str:
    cells = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def cell(text: Any) -> str:
    return f"<td>{esc(str(text))}</td>"


def num(value: float, fmt: str = "") -> str:
    """A right-aligned number cell (empty for None)."""
    return f'<td class="num">{"" if value is None else esc(format(value, fmt))}</td>'


def colour(source: str) -> str:
    return SOURCE_COLOURS.get(source, "#475467")


def footer(run: Run) -> str:
    s = run.settings
    return esc(f"line-agent report of run {run.id}: {s.model} / {s.layer}, generator {s.generator.kind}, "
             f"control {s.control}; written {datetime.now():%Y-%m-%d %H:%M}.")


# --- the unit page ----------------------------------------------------------------------------
def unit_page(report: Report, view: UnitView) -> str:
    state, step = view.state, view.label_step
    sections = [gallery_section(report, view), polysemantic_section(report, view), plot_section(state),
                pool_section(state), history_section(state, step), ablation_section(state), cost_section(state)]
    body = Template(template("page.html")).substitute(
        run_id=esc(report.run.id), unit=state.unit, label=esc(step.concept if step else "no label yet"),
        summary=summary(view), sections="\n".join(s for s in sections if s), footer=footer(report.run))
    return document(f"unit {state.unit}: {step.concept if step else 'no label yet'}", body)


def summary(view: UnitView) -> str:
    from agent.runner import labelled_without_llm, llm_failures_text

    state, step = view.state, view.label_step
    if step is None:
        return '<p class="note">No concept scored yet.</p>'
    scores = step.scores
    badges = [badge("AUC", f"{scores.auc:.3f}"), badge("MAD", f"{scores.mad:.2f}"),
              badge("mean activation", f"{scores.mean:.3g}"), badge("p", f"{scores.p:.1e}")]
    if view.poly.polysemantic:
        badges.append('<span class="badge flag">polysemantic</span>')
    lines = [f"stopped: {state.stop_reason}" if state.stop_reason else "still running"]
    if state.label is None:
        lines.append("no label yet: the best concept so far is shown")
    elif state.label.runners_up:
        lines.append("runners-up: " + ", ".join(f"{c} ({auc:.3f})" for c, auc in state.label.runners_up))
    if state.verdict:
        lines.append(f"review: {state.verdict}")
    if labelled_without_llm(state):
        lines.append(f"warning: labelled without the LLM ({llm_failures_text(state)}, no answer usable): "
                     "operators and the initial pool chose this label")
    return f'<div class="badges">{"".join(badges)}</div>' + "".join(f'<p class="meta">{esc(x)}</p>' for x in lines)


def gallery_section(report: Report, view: UnitView) -> str:
    step, unit = view.label_step, view.state.unit
    if step is None:
        return ""
    rows = [(f"the label: {step.concept}", report.concept_shots(step, unit)),
            ("control images it fires on least", report.control_shots(unit, lowest=True)),
            ("control images it fires on most", report.control_shots(unit, lowest=False))]
    body = "".join(f'<div class="gallery"><h3>{esc(title)}</h3>{strip(shots)}</div>' for title, shots in rows)
    note = "The number under each image is the unit's activation on it."
    if any(shot.activation is None for _, shots in rows for shot in shots) or not rows[1][1]:
        note += (" ? and missing control images: activations not in the cache, and the run's model names code, which "
                 "is not run unless trusted (line report --trust-run).")
    return section("Evidence", f'<div class="rows">{body}</div>', note)


def polysemantic_section(report: Report, view: UnitView) -> str:
    poly, state = view.poly, view.state
    if not poly.groups:
        return ""
    strong = [g for g in poly.groups if g.auc >= poly.score_threshold]
    scores = best_scores(state.steps)
    cards = []
    for group in strong:
        shots = report.concept_shots(state.step(group.best), state.unit, GROUP_IMAGES)
        members = "".join(f"<li>{esc(c)} ({scores[c]:.3f})</li>" for c in group.concepts)
        css = "group sense" if poly.polysemantic and group.best in poly.senses else "group"
        cards.append(f'<div class="{css}"><h3>{esc(group.best)} &middot; AUC {group.auc:.3f}</h3>'
                     f'<ul>{members}</ul>{strip(shots)}</div>')
    weak = [f"<tr>{cell(g.best)}{num(g.auc, '.3f')}{cell(', '.join(g.concepts[1:]))}</tr>"
            for g in poly.groups if g.auc < poly.score_threshold]
    rest = (f"<details><summary>{len(weak)} group(s) below AUC {poly.score_threshold:.2f}</summary>"
            f"{table(['best concept', 'AUC', 'also in the group'], weak, {1})}</details>") if weak else ""
    note = (f"{poly.describe()}. Concepts are grouped by text-embedding similarity "
            f"(>= {poly.group_similarity:.2f}); groups count as distinct below {poly.distinct_below:.2f}.")
    return section("Meanings in the history", f'<div class="groups">{"".join(cards)}</div>{rest}', note)


def plot_section(state: NeuronState) -> str:
    if not state.steps:
        return ""
    used = dict.fromkeys(s.source for s in state.steps)
    legend = "".join(f'<span><span class="dot" style="background:{colour(s)}"></span>{esc(s)}</span>' for s in used)
    legend += '<span><span class="dot" style="background:#12b76a"></span>running best</span>'
    return section("Score over the iterations", f'<div class="plot">{score_plot(state.steps)}'
                   f'<div class="legend">{legend}</div></div>',
                   "AUC of every scored concept in the order scored (dashed line: chance, 0.5); hover a point for its concept.")


def score_plot(steps: list[Step], width: int = 900, height: int = 260) -> str:
    """Inline SVG: each step's AUC, the running best as a step line, iterations on the x axis."""
    left, right, top, bottom = 44, 14, 12, 34
    span = (width - left - right) / len(steps)

    def x(i: float) -> float:
        return left + (i + 0.5) * span

    def y(auc: float) -> float:
        return top + (1 - auc) * (height - top - bottom)

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="score per step" font-size="11" fill="#667085">']
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        dash = ' stroke-dasharray="4 4"' if level == 0.5 else ""
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
                     f'stroke="#e4e7ec"{dash}/><text x="{left - 6}" y="{y(level) + 4:.1f}" text-anchor="end">{level:.2f}</text>')
    best, path = -1.0, []
    for i, step in enumerate(steps):
        best = max(best, step.scores.auc)
        path.append(f"{x(i - 0.5):.1f},{y(best):.1f} {x(i + 0.5):.1f},{y(best):.1f}")
    parts.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="#12b76a" stroke-width="2"/>')
    for i, step in enumerate(steps):
        if i == 0 or step.iteration != steps[i - 1].iteration:
            parts.append(f'<text x="{x(i):.1f}" y="{height - 16}" text-anchor="middle">{step.iteration}</text>')
        tip = f"{step.concept}: {step.scores.auc:.3f} ({step.source}, iteration {step.iteration})"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(step.scores.auc):.1f}" r="4.5" fill="{colour(step.source)}">'
                     f"<title>{esc(tip)}</title></circle>")
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 2}" text-anchor="middle">iteration</text></svg>')
    return "".join(parts)


def pool_section(state: NeuronState) -> str:
    steps = sorted((state.step(c) for c in state.pool if state.step(c)), key=lambda s: -s.scores.auc)
    if not steps:
        return ""
    rows = [f"<tr>{cell(s.concept)}{num(s.scores.auc, '.3f')}{num(s.scores.mad, '.2f')}"
            f"{cell(s.source)}{num(s.iteration)}</tr>" for s in steps]
    return section("Final pool", table(["concept", "AUC", "MAD", "source", "iteration"], rows, {1, 2, 4}),
                   "The concepts the LLM saw last, LINE's pool.")


def history_section(state: NeuronState, label: Step | None) -> str:
    items = sorted([(s.iteration, 0, s) for s in state.steps] + [(ev.iteration, 1, ev) for ev in state.events],
                   key=lambda item: (item[0], item[1]))
    rows = [step_row(item, item is label) if kind == 0 else event_row(item) for _, kind, item in items]
    return section("History", table(["it", "what", "concept", "AUC", "MAD", "reasoning / detail"], rows, {0, 3, 4}),
                   "Every scored concept with the LLM's reasoning, and the loop's events: rejected duplicates, "
                   "strategy changes after a stall, stops.")


def step_row(step: Step, is_label: bool) -> str:
    what = step.source + (f" · {step.strategy}" if step.strategy and step.strategy != step.source else "")
    css = ' class="best"' if is_label else ""
    return (f"<tr{css}>{num(step.iteration)}<td><span class=\"tag\">{esc(what)}</span></td>{cell(step.concept)}"
            f"{num(step.scores.auc, '.3f')}{num(step.scores.mad, '.2f')}"
            f'<td class="reason">{esc(step.reasoning)}</td></tr>')


def event_row(event: Event) -> str:
    return (f'<tr class="event event-{esc(event.kind)}">{num(event.iteration)}'
            f'<td><span class="tag">{esc(event.kind)}</span></td>{cell(event.concept)}<td></td><td></td>'
            f"{cell(event_detail(event))}</tr>")


def event_detail(event: Event) -> str:
    if event.kind == "duplicate":
        earlier, _, reason = event.detail.partition("|")
        return f"repeats “{earlier}”: {reason}" if earlier else reason
    return event.detail


def ablation_records(state: NeuronState) -> list[dict]:
    """Ablation results in whatever form the history holds them: events of kind
    "ablation", or an `ablations` list on the state or on a step."""
    records: list[Any] = [ev.model_dump(include={"iteration", "concept", "detail"})
                          for ev in state.events if ev.kind == "ablation"]
    records += list(getattr(state, "ablations", None) or [])
    for step in state.steps:
        records += [{"concept": step.concept, **as_dict(r)} for r in getattr(step, "ablations", None) or []]
    return [as_dict(r) for r in records]


def as_dict(record: Any) -> dict:
    if hasattr(record, "model_dump"):
        return record.model_dump(mode="json")
    return dict(record) if isinstance(record, dict) else {"result": record}


def ablation_section(state: NeuronState) -> str:
    records = ablation_records(state)
    if not records:
        return ""
    header = list(dict.fromkeys(key for record in records for key in record))
    rows = [f"<tr>{''.join(ablation_cell(r.get(k)) for k in header)}</tr>" for r in records]
    return section("Ablation", table(header, rows),
                   "Counterfactual checks: the same scene with and without the concept.")


def ablation_cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return cell(json.dumps(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return num(value, ".4g")
    return cell("" if value is None else value)


def cost_section(state: NeuronState) -> str:
    from agent.runner import llm_failures_text

    usage = state.usage
    items = [("images rendered", state.images_rendered()), ("images scored", state.images_used()),
             ("concepts scored", len(state.steps)), ("iterations", state.iteration),
             ("LLM calls", llm_failures_text(state)),
             ("tokens in / out", f"{usage.input_tokens} / {usage.output_tokens}"),
             ("time", f"{state.elapsed:.1f} s")]
    body = "".join(f"<dt>{esc(name)}</dt><dd>{esc(str(value))}</dd>" for name, value in items)
    return section("Cost", f'<dl class="cost">{body}</dl>')


# --- the index ------------------------------------------------------------------------------
def index_page(report: Report, views: list[UnitView]) -> str:
    run, s = report.run, report.run.settings
    pending = [u for u in run.units if u not in {v.state.unit for v in views}]
    meta = (f"{s.model} / {s.layer} · generator {s.generator.kind} · control {s.control} · "
            f"{len(views)} of {len(run.units)} units started" + (f" (not yet: {len(pending)})" if pending else ""))
    body = Template(template("index.html")).substitute(
        run_id=esc(run.id), meta=esc(meta), rows="\n".join(index_row(report, view) for view in views),
        footer=footer(run), script=template("index.js"))
    return document(f"run {run.id}", body)


def index_row(report: Report, view: UnitView) -> str:
    from agent.runner import summary_row

    row, step = summary_row(view.state), view.label_step
    thumb = image(report.concept_shots(step, view.state.unit, 1)[0]) if step else ""
    link = f'<a href="{page_name(row["unit"])}">'
    auc = row["auc"] if row["auc"] is not None else 0.0
    poly = "yes: " + ", ".join(view.poly.senses) if view.poly.polysemantic else ""
    return (f'<tr data-unit="{row["unit"]}" data-auc="{auc}" data-poly="{int(view.poly.polysemantic)}">'
            f'<td class="num" data-value="{row["unit"]}">{link}{row["unit"]}</a></td>'
            f"<td>{link}{thumb}</a></td><td>{link}{esc(row['label'] or '-')}</a></td>"
            f"{num(row['auc'], '.3f')}{num(row['mad'], '.2f')}{cell(poly)}"
            f"{num(row['images'])}{cell(llm_calls_text(row))}{cell(row['stop'])}</tr>")


def llm_calls_text(row: dict) -> str:
    """An index cell: the LLM calls, the failed ones, and whether the LLM gave the label nothing."""
    text = str(row["llm_calls"]) + (f" ({row['llm_failures']} failed)" if row["llm_failures"] else "")
    return text + (" · labelled without the LLM" if row["without_llm"] else "")
