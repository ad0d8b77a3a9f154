"""How well a unit separates a concept's images from control images.

Definitions follow CoSy (Kopf et al. 2024): AUC with the concept's images as positives
(label 1) and control images as negatives (label 0); MAD = (mean_concept - mean_control) /
std_control. We add the mean activation on the concept's images, a one-sided Mann-Whitney
U test (concept > control), the standard error of MAD (how far MAD could move with other
images of the concept) and the top share: the share of the concept's images above the
control's 99th percentile. Every function works on all units at once: arrays are
images x units.
"""

from __future__ import annotations

import json
import math

import numpy as np
from pydantic import BaseModel

_EPS = 1e-8
TOP_PERCENTILE = 99


class Scores(BaseModel):
    """One unit's scores for one concept."""

    auc: float
    mad: float
    mean: float
    u: float
    p: float
    mad_se: float = 0.0
    top_share: float = 0.0
    images: int = 0


def ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks per column, ties averaged (as scipy's rankdata), and each column's tie
    term sum(t^3 - t) over groups of t equal values. Plain numpy: importing scipy.stats
    would cost a second at every start-up. All columns at once (a loop over a layer's
    1,280 units cost more than the forwards)."""
    n, units = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    start, end = _tie_groups(np.take_along_axis(values, order, axis=0))
    result = np.empty((n, units))
    np.put_along_axis(result, order, (start + end) / 2 + 1, axis=0)
    return result, _group_ties(start, end)


def _group_ties(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """sum(t^3 - t) per column from each position's tie group (`_tie_groups`): a group's t
    members add t^2 - 1 each."""
    return ((end - start + 1).astype(np.float64) ** 2 - 1).sum(axis=0)


def _tie_groups(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For column-sorted values, the first and last position of each value's group of equals."""
    n, units = ordered.shape
    position = np.arange(n)[:, None]
    differs = ordered[1:] != ordered[:-1]
    first = np.vstack([np.ones((1, units), bool), differs])
    last = np.vstack([differs, np.ones((1, units), bool)])
    start = np.maximum.accumulate(np.where(first, position, 0), axis=0)
    end = np.minimum.accumulate(np.where(last, position, n - 1)[::-1], axis=0)[::-1]
    return start, end


def auc(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """ROC AUC per unit, ties counted half (equals sklearn's roc_auc_score)."""
    return mann_whitney(concept, control)[0] / (len(concept) * len(control))


def mad(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Mean activation difference in units of the control's standard deviation."""
    return (concept.mean(axis=0) - control.mean(axis=0)) / (control.std(axis=0) + _EPS)


class ControlSummary(BaseModel):
    """What scoring needs of a control set, computed once (`summarise`) and reused by every
    concept scored against it: a sweep scores hundreds of concepts for every unit of a
    layer against the same control images. Arrays have one entry per unit."""

    model_config = {"arbitrary_types_allowed": True}
    ties: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    top: np.ndarray

    def columns(self, chosen: np.ndarray) -> "ControlSummary":
        """The summary of these units (positions) only."""
        return ControlSummary(ties=self.ties[chosen], mean=self.mean[chosen], spread=self.spread[chosen],
                              top=self.top[chosen])


def summarise(control: np.ndarray) -> ControlSummary:
    """`ControlSummary` of an images x units control array."""
    control = np.asarray(control, dtype=np.float64)
    return ControlSummary(ties=_tie_term(np.sort(control, axis=0)), mean=control.mean(axis=0),
                          spread=control.std(axis=0) + _EPS, top=np.percentile(control, TOP_PERCENTILE, axis=0))


def _tie_term(ordered: np.ndarray) -> np.ndarray:
    """sum(t^3 - t) over each column's groups of t equal values, of column-sorted values."""
    if len(ordered) == 0:
        return np.zeros(ordered.shape[1])
    return _group_ties(*_tie_groups(ordered))


_PAIRWISE_LIMIT = 20_000_000  # concept x control x units comparisons for the direct count (160 MB of booleans at most)


def mann_whitney(concept: np.ndarray, control: np.ndarray,
                 control_ties: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """U statistic and one-sided p-value (concept activations greater than control), by the
    normal approximation with tie and continuity corrections (scipy's "asymptotic").
    `control_ties`: the control's own tie term (`ControlSummary.ties`) where it is known.

    With a few concept images against a large control set (the loop's case: 3 against 300),
    U is counted directly (each concept value's control values below it, ties half) and the
    tie term is the control's plus what the concept's values add to it: no ranking of the
    combined sample."""
    n1, n2 = len(concept), len(control)
    n = n1 + n2
    if n1 * n2 * concept.shape[1] <= _PAIRWISE_LIMIT and n1 > 0:
        below = (control[None] < concept[:, None]).sum(axis=1)
        equal = (control[None] == concept[:, None]).sum(axis=1)  # concept x units
        u = (below + 0.5 * equal).sum(axis=0)
        same = (concept[None] == concept[:, None]).sum(axis=1)  # concept values equal to each (itself included)
        grown = (equal + same).astype(np.float64)
        added = np.divide((grown**3 - grown) - (equal**3 - equal), same, out=np.zeros_like(grown), where=same > 0)
        ties = (control_ties if control_ties is not None else _tie_term(np.sort(control, axis=0))) + added.sum(axis=0)
        # (each group of equal concept values counted once; a NaN equals nothing, itself included)
    else:
        rank, ties = ranks(np.concatenate([concept, control]))
        u = rank[:n1].sum(axis=0) - n1 * (n1 + 1) / 2
    sigma = np.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u - n1 * n2 / 2 - 0.5) / np.where(sigma > 0, sigma, np.inf)
    p = np.array([0.5 * math.erfc(value / math.sqrt(2)) for value in z])
    return u, p


def score_units(concept: np.ndarray, control: np.ndarray, summary: ControlSummary | None = None) -> dict[str, np.ndarray]:
    """All scores for every unit: name -> array of length units. `summary`: the control's
    `summarise(control)`, where the caller keeps one."""
    concept = np.asarray(concept, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if concept.ndim == 1:
        concept, control = concept[:, None], control[:, None]
    summary = summary if summary is not None else summarise(control)
    u, p = mann_whitney(concept, control, summary.ties)
    return {
        "auc": u / (len(concept) * len(control)),
        "mad": (concept.mean(axis=0) - summary.mean) / summary.spread,
        "mean": concept.mean(axis=0),
        "u": u,
        "p": p,
        "mad_se": concept.std(axis=0, ddof=1 if len(concept) > 1 else 0) / np.sqrt(len(concept)) / summary.spread,
        "top_share": (concept > summary.top).mean(axis=0),
        "images": np.full(concept.shape[1], len(concept)),
    }


def unit_scores(table: dict[str, np.ndarray], index: int) -> Scores:
    """The `Scores` of one unit (by position) from a `score_units` table."""
    return Scores(**{name: float(values[index]) for name, values in table.items()})


def strict_json(value) -> str:
    """`value` as indented, valid JSON: NaN and infinities written as null (`json_ready`)."""
    return json.dumps(json_ready(value), indent=1, allow_nan=False)


def json_ready(value):
    """`value` with every NaN or infinite float as None, so that `json.dumps(...,
    allow_nan=False)` writes valid JSON (null) where a score could not be computed."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value
