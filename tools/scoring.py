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
    would cost a second at every start-up."""
    n, units = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    result = np.empty((n, units))
    ties = np.zeros(units)
    for j in range(units):
        starts = np.flatnonzero(np.r_[True, ordered[1:, j] != ordered[:-1, j]])
        sizes = np.diff(np.r_[starts, n])
        result[order[:, j], j] = np.repeat(starts + (sizes + 1) / 2, sizes)
        ties[j] = float((sizes**3 - sizes).sum())
    return result, ties


def auc(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """ROC AUC per unit, ties counted half (equals sklearn's roc_auc_score)."""
    return mann_whitney(concept, control)[0] / (len(concept) * len(control))


def mad(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Mean activation difference in units of the control's standard deviation."""
    return (concept.mean(axis=0) - control.mean(axis=0)) / (control.std(axis=0) + _EPS)


def mann_whitney(concept: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U statistic and one-sided p-value (concept activations greater than control), by the
    normal approximation with tie and continuity corrections (scipy's "asymptotic")."""
    n1, n2 = len(concept), len(control)
    n = n1 + n2
    rank, ties = ranks(np.concatenate([concept, control]))
    u = rank[:n1].sum(axis=0) - n1 * (n1 + 1) / 2
    sigma = np.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u - n1 * n2 / 2 - 0.5) / np.where(sigma > 0, sigma, np.inf)
    p = np.array([0.5 * math.erfc(value / math.sqrt(2)) for value in z])
    return u, p


def score_units(concept: np.ndarray, control: np.ndarray) -> dict[str, np.ndarray]:
    """All scores for every unit: name -> array of length units."""
    concept = np.asarray(concept, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if concept.ndim == 1:
        concept, control = concept[:, None], control[:, None]
    u, p = mann_whitney(concept, control)
    spread = control.std(axis=0) + _EPS
    return {
        "auc": u / (len(concept) * len(control)),
        "mad": mad(concept, control),
        "mean": concept.mean(axis=0),
        "u": u,
        "p": p,
        "mad_se": concept.std(axis=0, ddof=1 if len(concept) > 1 else 0) / np.sqrt(len(concept)) / spread,
        "top_share": (concept > np.percentile(control, TOP_PERCENTILE, axis=0)).mean(axis=0),
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
