"""`labels.csv` beside a run's `history.json`: one row per labelled unit, for spreadsheets
and scripts: layer, unit, label, AUC, MAD, explained (the fresh-image verdict) and source
(who proposed the label's concept: sweep, init, bank, llm, operator, summary, user).

Labels are text an LLM (or a person) wrote: the csv module quotes them, and a text cell
that a spreadsheet would take for a formula gets a leading `'`.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Iterable

from agent.loop.state import NeuronState

COLUMNS = ("layer", "unit", "label", "auc", "mad", "explained", "source")
# Spreadsheets evaluate a cell that starts with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def labels_csv(layer: str, states: Iterable[NeuronState]) -> bytes:
    """The CSV text (UTF-8) of the labelled ones of `states`, all units of `layer`, header first."""
    return rows_csv(label_rows(layer, states))


def label_rows(layer: str, states: Iterable[NeuronState]) -> list[list[str]]:
    """One row (as cells) per state with a label, in the order given; units still labelling are left out."""
    rows = []
    for state in states:
        label = state.label
        if label is None:
            continue
        explained = "" if label.explained is None else str(label.explained).lower()
        rows.append([text_cell(layer), str(state.unit), text_cell(label.concept), number(label.scores.auc),
                     number(label.scores.mad), explained, state.label_source()])
    return rows


def rows_csv(rows: Iterable[list[str]]) -> bytes:
    """The header and `rows` as CSV text in UTF-8 (quoted where a cell needs it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def text_cell(text: str) -> str:
    """`text`, with a `'` before it where a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def number(value: float | None) -> str:
    """A score with 4 decimals; empty where it could not be computed (NaN)."""
    return "" if value is None or not math.isfinite(value) else f"{value:.4f}"
