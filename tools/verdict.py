"""How sure a label is: confirmation evidence on fresh images, with intervals and a p-value,
and the verdict it supports: explained, or unexplained by what the generator can draw.

The evidence is the label's held-out images only (`held_out_verdict`: a block of seeds from
VERDICT_SEED that no other step uses): the loop's own images chose the label, and the confirm
step's fresh images chose it among the finalists, so both would flatter it (with three images
and a few finalists, one passes by luck: `_blocks.8` unit 21 passed at AUC 0.85 against photos
on its confirmation images, and scored 0.46 on 50 new ones). On them:

- AUC and MAD against the control set, each with a bootstrap interval: images of the
  concept and of the control resampled with replacement (`BOOTSTRAP` draws, a fixed seed),
  the `LEVEL` central interval. One lucky image among a few gives a wide interval whose low
  end sits near chance: the bar below asks for its low end, not the point.
- The one-sided Mann-Whitney p-value (concept > control), as `tools.scoring` computes it.
- Where natural photos are at hand (a `dir:` control set, or the ImageNet samples of the
  shared data folder), the same AUC against them: drawings that fire the unit less than
  ordinary photos do explain nothing about what the unit does on photos.

The bar (`Bar`): at least `min_images` fresh images, p <= `max_p`, the AUC interval's low
end >= `min_auc_low`, MAD > 0, and, with natural photos, the AUC against them >=
`min_natural_auc` with p <= `max_p` against them too (three images that outrank photos by
luck, or by being the best of several finalists, are no evidence). A label that passes is *explained*; one that does not is reported as
unexplained, with its best guess and the numbers. Pure numpy; pydantic results.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from tools.scoring import mad as mad_of
from tools.scoring import mann_whitney

VERDICT_SEED = 3_000  # the label's held-out images (loop 0.., confirm 1000.., CoSy 5000.., control 10000..)
BOOTSTRAP = 1000
NATURAL_EVERY = 4  # the verdict's natural photos: every 4th ImageNet sample (250 classes across the 1000)
LEVEL = 0.90
SEED = 0


class Bar(BaseModel):
    """What confirmation evidence must show for a label to count as explained."""

    min_images: int = 3
    max_p: float = 0.01
    min_auc_low: float = 0.7
    min_natural_auc: float = 0.8

    def text(self) -> str:
        return (f"at least {self.min_images} fresh images, p <= {self.max_p:g}, AUC's {LEVEL:.0%} interval above "
                f"{self.min_auc_low:g}, MAD > 0, and AUC >= {self.min_natural_auc:g} with p <= {self.max_p:g} "
                "against natural photos where they are at hand")


class Evidence(BaseModel):
    """A concept's fresh images against one control set: AUC and MAD with bootstrap intervals."""

    control: str = Field(description="the control set compared against")
    images: int = Field(description="fresh images of the concept")
    controls: int = Field(0, description="control images")
    auc: float | None = Field(None, description="None: no images")
    auc_low: float | None = None
    auc_high: float | None = None
    mad: float | None = None
    mad_low: float | None = None
    mad_high: float | None = None
    p: float = 1.0
    activations: list[float] = Field(default_factory=list, description="the unit's activation on each fresh image")
    seeds: str = Field("", description="the images' seeds, where they are not the confirm step's (a held-out block)")

    def text(self) -> str:
        if self.auc is None:
            return f"no fresh images vs {self.controls} {self.control}"
        return (f"AUC {self.auc:.3f} [{self.auc_low:.2f}, {self.auc_high:.2f}], MAD {self.mad:.2f} "
                f"[{self.mad_low:.2f}, {self.mad_high:.2f}], p {self.p:.2g}, {self.images} "
                + (f"held-out images (seeds {self.seeds})" if self.seeds else "fresh images")
                + f" vs {self.controls} {self.control}")


class Verdict(BaseModel):
    """Explained or not, why, and the evidence."""

    explained: bool
    reason: str
    evidence: Evidence | None = Field(None, description="the label's fresh images against the run's control set")
    natural: Evidence | None = Field(None, description="... against natural photos, where at hand")
    bar: Bar = Field(default_factory=Bar)

    def text(self) -> str:
        return ("explained" if self.explained else "unexplained") + f": {self.reason}"


def auc(concept: Sequence[float], control: Sequence[float]) -> float | None:
    """AUC of `concept` activations against `control` (ties count half), without the
    intervals `evidence` bootstraps; None for an empty set."""
    x = np.asarray(concept, dtype=np.float64).ravel()
    y = np.asarray(control, dtype=np.float64).ravel()
    if len(x) == 0 or len(y) == 0:
        return None
    return float(mann_whitney(x[:, None], y[:, None])[0][0] / (len(x) * len(y)))


def evidence(concept: Sequence[float], control: Sequence[float], name: str = "control",
             rounds: int = BOOTSTRAP, seed: int = SEED) -> Evidence:
    """AUC, MAD (bootstrap intervals) and p of `concept` activations against `control`."""
    x = np.asarray(concept, dtype=np.float64).ravel()
    y = np.asarray(control, dtype=np.float64).ravel()
    if len(x) == 0 or len(y) == 0:
        return Evidence(control=name, images=len(x), controls=len(y))
    u, p = mann_whitney(x[:, None], y[:, None])
    area = float(u[0] / (len(x) * len(y)))
    mad = float(mad_of(x[:, None], y[:, None])[0])
    aucs, mads = bootstrap(x, y, rounds, seed)
    tail = (1 - LEVEL) / 2 * 100
    return Evidence(control=name, images=len(x), controls=len(y), auc=area, mad=mad, p=float(p[0]),
                    auc_low=float(np.percentile(aucs, tail)), auc_high=float(np.percentile(aucs, 100 - tail)),
                    mad_low=float(np.percentile(mads, tail)), mad_high=float(np.percentile(mads, 100 - tail)),
                    activations=[float(a) for a in x])


def bootstrap(x: np.ndarray, y: np.ndarray, rounds: int = BOOTSTRAP, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """AUC and MAD of `rounds` resamples (with replacement) of both sets."""
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, len(x), (rounds, len(x)))]
    ys, ys_mean, ys_std = _resampled(y, len(x), rounds, seed, rng)
    # every round in one searchsorted: round b's values shifted by b * span keep the rounds
    # apart in one sorted array (equal values stay equal: ties count half, as in mann_whitney)
    span = 2.0 * (max(np.ptp(x), np.ptp(y)) + abs(float(x.min() - y.min()))) + 1.0
    shift = (np.arange(rounds) * span)[:, None]
    flat = (ys + shift).ravel()
    offset = (np.arange(rounds) * len(y))[:, None]
    below = np.searchsorted(flat, xs + shift, "left") - offset
    up_to = np.searchsorted(flat, xs + shift, "right") - offset
    aucs = (below + (up_to - below) / 2).sum(axis=1) / (len(x) * len(y))
    mads = (xs.mean(axis=1) - ys_mean) / (ys_std + 1e-8)
    return aucs, mads


_RESAMPLES: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
_RESAMPLES_KEPT = 8  # a unit's control set and natural photos, against tests of a few sizes
_RESAMPLES_LOCK = threading.Lock()


def _resampled(y: np.ndarray, n_x: int, rounds: int, seed: int, rng: np.random.Generator):
    """The control side of `bootstrap`: `rounds` sorted resamples of `y`, their means and
    spreads. They depend on `y` and on how many draws came before (the concept's), not on the
    concept's values, so a unit's tests (the verdict, the meanings' up to a dozen) share them:
    sorting 1,000 resamples of 300 controls was most of a verdict's time (nothing draws
    from `rng` after them)."""
    key = (y.tobytes(), n_x, rounds, seed)
    with _RESAMPLES_LOCK:
        kept = _RESAMPLES.get(key)
        if kept is not None:
            _RESAMPLES.move_to_end(key)
    if kept is None:
        ys = np.sort(y[rng.integers(0, len(y), (rounds, len(y)))], axis=1)
        kept = (ys, ys.mean(axis=1), ys.std(axis=1))
        for array in kept:
            array.flags.writeable = False  # shared by every test that finds them here
        with _RESAMPLES_LOCK:
            _RESAMPLES[key] = kept
            while len(_RESAMPLES) > _RESAMPLES_KEPT:
                _RESAMPLES.popitem(last=False)
    return kept


def judge(fresh: Sequence[float] | None, control: Sequence[float], natural: Sequence[float] | None = None, *,
          control_name: str = "control", natural_name: str = "natural photos", bar: Bar | None = None) -> Verdict:
    """The verdict on a label from its fresh activations (None: it was never confirmed on
    fresh images), the control set's, and natural photos' where at hand."""
    bar = bar or Bar()
    if fresh is None or len(fresh) == 0:
        return Verdict(explained=False, bar=bar,
                       reason="never confirmed on fresh images (no confirm step): nothing shows it beyond the "
                              "images that chose it")
    ev = evidence(fresh, control, control_name)
    nat = evidence(fresh, natural, natural_name) if natural is not None and len(natural) else None
    failures = []
    if ev.images < bar.min_images:
        failures.append(f"only {ev.images} fresh images (< {bar.min_images})")
    if not ev.p <= bar.max_p:
        failures.append(f"p {ev.p:.2g} > {bar.max_p:g} against {control_name}")
    if ev.auc_low is None or not ev.auc_low >= bar.min_auc_low:
        failures.append(f"AUC interval [{ev.auc_low:.2f}, {ev.auc_high:.2f}] reaches below {bar.min_auc_low:g}")
    if ev.mad is None or not ev.mad > 0:
        failures.append(f"MAD {ev.mad:.2f} <= 0")
    if nat is not None and nat.auc is not None and not nat.auc >= bar.min_natural_auc:
        failures.append(f"against {natural_name} AUC {nat.auc:.2f} < {bar.min_natural_auc:g}: the drawings fire "
                        "the unit " + ("less than" if nat.auc < 0.5 else "hardly more than") + " ordinary photos do")
    elif nat is not None and nat.auc is not None and not nat.p <= bar.max_p:
        # the same standard as against the control: three images that outrank photos by luck
        # (or by being the best of several finalists) are no evidence
        failures.append(f"against {natural_name} p {nat.p:.2g} > {bar.max_p:g}: the drawings' lead over ordinary "
                        "photos could be chance")
    if failures:
        return Verdict(explained=False, evidence=ev, natural=nat, bar=bar,
                       reason="unexplained by what the generator can draw (best guess shown): " + "; ".join(failures))
    where = f"; against {natural_name} AUC {nat.auc:.2f}" if nat is not None else ""
    return Verdict(explained=True, evidence=ev, natural=nat, bar=bar,
                   reason=f"{ev.text()}{where}: passes the bar ({bar.text()})")


# --- the label's verdict from a run's engine ------------------------------------------------------
def _natural_folder() -> Path | None:
    """The ImageNet samples of the shared data folder (LINE_SHARED_DATA), where there are some."""
    from tools.control import NATURAL_SAMPLES

    root = os.environ.get("LINE_SHARED_DATA")
    folder = Path(root).expanduser() / NATURAL_SAMPLES if root else None
    return folder if folder is not None and folder.is_dir() else None


def natural_sample(engine) -> tuple[list[str], Callable[[int], object]] | None:
    """(cache keys, loader) of the natural photos the verdict uses for `engine` when its
    control set is no folder of photos: every NATURAL_EVERY-th ImageNet sample of the shared
    data folder (LINE_SHARED_DATA); None where it names none, or where the control set is a
    `dir:` folder (those photos are the control's). A network run forwards them once for all
    its layers (agent.runs.network.prepare_together)."""
    from tools.control import load_control_set

    folder = _natural_folder()
    if folder is None or engine.control.spec.startswith("dir:"):
        return None
    photos = load_control_set(f"dir:{folder}", engine.cache)
    chosen = list(range(0, len(photos), NATURAL_EVERY))
    return [photos.keys[i] for i in chosen], lambda i: photos.load(chosen[i])


def natural_photos(engine) -> tuple[str, np.ndarray] | None:
    """(name, photos x units activations) of natural photos for `engine`'s layer: its own
    control set when that is a folder of photos (`dir:`), else `natural_sample`; None
    otherwise. Activations go through the engine's cache, so a layer pays for the photos once."""
    if engine.control.spec.startswith("dir:"):
        return "the control photos", engine.control_activations()
    folder = _natural_folder()
    if folder is None:
        return None
    memo = engine.__dict__.setdefault("_natural_photos", {})
    if folder not in memo:
        keys, load = natural_sample(engine)
        memo[folder] = engine.activations(keys, load) if keys else None
    acts = memo[folder]
    return (f"{len(acts)} ImageNet sample photos", acts) if acts is not None else None


def label_verdict(engine, unit: int, fresh: Sequence[float] | None, bar: Bar | None = None) -> Verdict:
    """`judge` with the engine's control set and, where at hand, natural photos."""
    control = engine.control_activations()[:, unit]
    natural = natural_photos(engine)
    name = f"control {engine.control.spec}"
    if natural is not None and natural[1] is engine.control_activations():
        return judge(fresh, control, control, control_name=name, natural_name=natural[0], bar=bar)
    return judge(fresh, control, None if natural is None else natural[1][:, unit], control_name=name,
                 natural_name=natural[0] if natural else "natural photos", bar=bar)


def held_out_verdict(engine, unit: int, concept: str, images: int, bar: Bar | None = None) -> Verdict:
    """`label_verdict` on `images` new images of the chosen label (seeds from VERDICT_SEED,
    used by no other step). The confirm step's fresh images chose the label among the
    finalists (and the verdict-aware choice picks one that passes on them), so they flatter
    the winner: with three images and a few finalists, one passes by luck. The verdict is
    the label's test on images that chose nothing."""
    activations = engine.evaluate(concept, engine.seeds(images, start=VERDICT_SEED)).activations[:, unit]
    verdict = label_verdict(engine, unit, [float(a) for a in activations], bar)
    for ev in (verdict.evidence, verdict.natural):
        if ev is not None:
            ev.seeds = f"{VERDICT_SEED}-{VERDICT_SEED + images - 1}"
    return verdict


def finalist_verdict(engine, unit: int, finalist, bar: Bar | None = None) -> Verdict:
    """`label_verdict` on a finalist's fresh images (tools.history.Finalist: the last `fresh`
    of its activations)."""
    fresh = finalist.activations[-finalist.fresh:] if finalist is not None and finalist.fresh else None
    return label_verdict(engine, unit, fresh, bar)


def trust_row(verdict: Verdict | None, polysemanticity=None) -> dict:
    """Table columns of a label's verdict (None where it was never judged): the unit table,
    `--json` and the evals share them."""
    ev = verdict.evidence if verdict else None
    nat = verdict.natural if verdict else None

    def r(value, digits=3):
        return None if value is None else round(value, digits)

    return {
        "explained": verdict.explained if verdict else None,
        "fresh_images": ev.images if ev else None,
        "fresh_auc": r(ev.auc) if ev else None,
        "fresh_auc_interval": [r(ev.auc_low), r(ev.auc_high)] if ev else None,
        "fresh_mad": r(ev.mad, 2) if ev else None,
        "fresh_mad_interval": [r(ev.mad_low, 2), r(ev.mad_high, 2)] if ev else None,
        "p": float(f"{ev.p:.3g}") if ev else None,
        "natural_auc": r(nat.auc) if nat else None,
        "meanings": [m.concept for m in polysemanticity.meanings] if polysemanticity is not None else [],
    }
