"""How well a unit separates a concept's images from control images.

Definitions follow CoSy (Kopf et al. 2024): AUC with the concept's images as positives
(label 1) and control images as negatives (label 0); MAD = (mean_concept - mean_control) /
std_control. We add the mean activation on the concept's images and a one-sided
Mann-Whitney U test (concept > control). Every function works on all units at once:
arrays are images x units.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

_EPS = 1e-8


class Scores(BaseModel):
    """One unit's scores for one concept."""

    auc: float
    mad: float
    mean: float
    u: float
    p: float


def auc(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """ROC AUC per unit, ties counted half (equals sklearn's roc_auc_score)."""
    from scipy import stats  # imported here: it costs half a second at start-up

    n, m = len(concept), len(control)
    ranks = stats.rankdata(np.concatenate([concept, control]), axis=0)
    u = ranks[:n].sum(axis=0) - n * (n + 1) / 2
    return u / (n * m)


def mad(concept: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Mean activation difference in units of the control's standard deviation."""
    return (concept.mean(axis=0) - control.mean(axis=0)) / (control.std(axis=0) + _EPS)


def mann_whitney(concept: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U statistic and one-sided p-value (concept activations greater than control)."""
    from scipy import stats

    result = stats.mannwhitneyu(concept, control, alternative="greater", axis=0, method="asymptotic")
    return np.asarray(result.statistic, dtype=float), np.asarray(result.pvalue, dtype=float)


def score_units(concept: np.ndarray, control: np.ndarray) -> dict[str, np.ndarray]:
    """All scores for every unit: name -> array of length units."""
    concept = np.asarray(concept, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if concept.ndim == 1:
        concept, control = concept[:, None], control[:, None]
    u, p = mann_whitney(concept, control)
    return {
        "auc": auc(concept, control),
        "mad": mad(concept, control),
        "mean": concept.mean(axis=0),
        "u": u,
        "p": p,
    }


def unit_scores(table: dict[str, np.ndarray], index: int) -> Scores:
    """The `Scores` of one unit (by position) from a `score_units` table."""
    return Scores(**{name: float(values[index]) for name, values in table.items()})
