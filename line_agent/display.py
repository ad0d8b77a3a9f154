"""How results show themselves in Jupyter: HTML fragments from the report's templates.

The fragments reuse `agent/ui/report_templates/` (the label's part of a unit page, the index's
rows, the image strips) inside `notebook.html`, which scopes the report's stylesheet to the
fragment so that the notebook around it keeps its own look. Every value is autoescaped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from agent.ui.report import Report, Shot, UnitView, data_uri, index_entry, label_context, render, templates

if TYPE_CHECKING:
    from agent.loop.state import NeuronState
    from line_agent.api import ConceptScore, ScoreTable

TABLE_ROWS = 20  # units shown in a score table's display


@lru_cache(maxsize=1)
def scoped_css() -> str:
    """The report's stylesheet with every rule scoped to `.line-agent` (page-wide rules,
    `:root` and `body`, apply to the fragment itself)."""
    css = templates().loader.get_source(templates(), "style.css")[0]

    def scope(match: re.Match) -> str:
        selectors = [s.strip() for s in match.group(1).split(",")]
        return ", ".join(".line-agent" if s in (":root", "body") else f".line-agent {s}" for s in selectors) + " {"

    return re.sub(r"([^{}]+?)\s*\{", scope, css)


def fragment(template: str, **context) -> str:
    return render(template, css=scoped_css(), **context)


class LazyEmbedder:
    """The text embedder, loaded only if a display needs one (a unit whose label stores no
    polysemanticity yet)."""

    def embed(self, texts: list[str]):
        from tools.text import default_embedder

        return default_embedder().embed(texts)


def score_html(score: ConceptScore) -> str:
    return fragment("notebook_score.html", score=score, shots=_shots(score))


def table_html(table: ScoreTable) -> str:
    rows = sorted(table, key=lambda s: -s.auc)[:TABLE_ROWS]
    return fragment("notebook_table.html", table=table, rows=rows, shots=_shots(rows[0]) if rows else [])


def label_html(report: Report, state: NeuronState) -> str:
    view = report.view(state)
    return fragment("notebook_label.html", **label_context(report, view))


def run_html(report: Report, states: Sequence[NeuronState], pages: Path) -> str:
    """The run's index table; rows link to the report's unit pages under `pages`."""
    views = [report.view(state) for state in states]
    return fragment("notebook_run.html", run=report.run, rows=[index_entry(report, view) for view in views],
                    page_name=lambda unit: (pages / f"unit-{unit}.html").as_posix())


def _shots(score: ConceptScore) -> list[Shot]:
    """The concept's images, with the unit's activation on each and, for a layer with a
    spatial map, where it fires (`agent.ui.overlay`, one scale over these images)."""
    from agent.ui.overlay import overlaid
    from agent.ui.report import THUMBNAIL

    loads = {ref.key: (lambda ref=ref: score.engine.load_image(ref)) for ref in score.refs}
    shots = [Shot(data_uri(loads[ref.key]()), f"seed {ref.seed}", activation, key=ref.key)
             for ref, activation in zip(score.refs, score.activations)]
    return overlaid(score.engine, score.unit, [shots], loads, THUMBNAIL)[0][0]
