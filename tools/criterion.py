"""How concepts are compared: one criterion for the pool, LINE's eviction rule, the label
and every eval method that picks a label from scores.

AUC alone saturates: on a handful of images many concepts tie near 1.0, and it ignores how
strongly the unit fires. The criteria:

- ``auc``: AUC, ties broken by MAD (the LINE paper's choice).
- ``mad``: MAD alone (the mean activation above the control's, in control standard
  deviations; for one unit the same order as the mean activation).
- ``gated-mad`` (default): AUC as a gate, then MAD. Concepts more than ``auc_gate`` below
  the best AUC among those compared are out; the rest are ordered by MAD.
- ``top-share``: the share of the concept's images above the control's 99th
  percentile, ties broken by MAD. It asks that the concept's images drive the unit like
  its strongest control images do, and ignores how far above the control's floor the rest
  sit (a concept drawn constantly a little above a floor of zeros gets a high AUC).

Finalists: the concepts worth scoring on fresh images are taken in turn from three views
of the evidence, this criterion's order, AUC's and MAD's, because on a few images a gate
or a tie can hide the best concept from any one view; the fresh images then decide.

Parsimony: a shorter concept (fewer words) takes the winner's place only when it is as
strong: it passes the gate and its MAD is within `AS_STRONG_Z` standard errors of the
winner's, or within `AS_STRONG_SHARE` of it (a unit that saturates shows no spread); the
`auc` criterion's tolerance is 0.02 AUC, the top share's one image's worth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Literal, Sequence, TypeVar

from tools.scoring import Scores

CriterionName = Literal["auc", "mad", "gated-mad", "top-share"]
CRITERIA: tuple[str, ...] = ("auc", "mad", "gated-mad", "top-share")
AS_STRONG_Z = 2.0
AS_STRONG_SHARE = 0.05  # ... or within this share of the winner's MAD (saturated units have no spread)
AUC_TOLERANCE = 0.02  # the `auc` criterion's "as strong": the legacy label tolerance
MAX_SHORTER = 2  # finalists: the shortest concepts as strong as the best

T = TypeVar("T")


@dataclass(frozen=True)
class Criterion:
    name: CriterionName = "gated-mad"
    auc_gate: float = 0.05

    # --- ordering ----------------------------------------------------------------------
    def key(self, s: Scores) -> tuple[float, ...]:
        """Larger is better, ignoring the gate (which depends on what else is compared)."""
        if self.name == "auc":
            return (s.auc, s.mad)
        if self.name == "top-share":
            return (s.top_share, s.mad)
        return (s.mad, s.auc)

    def gate(self, scores: Sequence[Scores]) -> float:
        """The lowest AUC that passes, given everything compared (-inf: no gate)."""
        if self.name != "gated-mad" or not scores:
            return -math.inf
        return max(s.auc for s in scores) - self.auc_gate

    def order(self, items: Sequence[T], scores_of: Callable[[T], Scores]) -> list[T]:
        """`items` best first (a stable sort: equal items keep their order)."""
        floor = self.gate([scores_of(i) for i in items])
        return sorted(items, key=lambda i: (scores_of(i).auc >= floor, *self.key(scores_of(i))), reverse=True)

    def better(self, a: Scores, b: Scores) -> bool:
        """Whether `a` beats `b` when only the two are compared."""
        floor = self.gate([a, b])
        return (a.auc >= floor, *self.key(a)) > (b.auc >= floor, *self.key(b))

    # --- finalists ---------------------------------------------------------------------
    def views(self) -> list["Criterion"]:
        """This criterion, then AUC and MAD alone: the orders finalists are drawn from."""
        return [self] + [Criterion(name, self.auc_gate) for name in ("auc", "mad") if name != self.name]

    def finalists(self, items: Sequence[T], scores_of: Callable[[T], Scores], count: int) -> list[tuple[T, str]]:
        """(item, why) for `count` distinct items: the first of each view, then the second of
        each, and so on."""
        orders = [(view.name, view.order(items, scores_of)) for view in self.views()]
        chosen: dict[int, tuple[T, str]] = {}
        for rank in range(len(items)):
            for name, order in orders:
                if len(chosen) == count:
                    return list(chosen.values())
                chosen.setdefault(id(order[rank]), (order[rank], f"top {rank + 1} by {name}"))
        return list(chosen.values())

    def shorter(self, items: Sequence[T], scores_of: Callable[[T], Scores], name_of: Callable[[T], str]) -> list[T]:
        """The items shorter than the best and as strong as it, shortest first."""
        ranked = self.order(items, scores_of)
        if not ranked:
            return []
        best, floor = ranked[0], self.gate([scores_of(i) for i in items])
        return sorted((i for i in ranked[1:] if _words(name_of(i)) < _words(name_of(best))
                       and self.as_strong(scores_of(i), scores_of(best), floor)), key=lambda i: _words(name_of(i)))

    def shortlist(self, items: Sequence[T], scores_of: Callable[[T], Scores], name_of: Callable[[T], str],
                  count: int, also: Sequence[tuple[T, str]] = (), key_of: Callable[[T], str] | None = None,
                  ) -> list[tuple[T, str]]:
        """The finalists to confirm on fresh images, (item, why): `count` taken in turn from
        the criterion's, AUC's and MAD's orders (`finalists`), then `also` (the loop's
        summary), then at most `MAX_SHORTER` of the shortest items as strong as the best
        (`shorter`); one per `key_of` (the name by default). The loop's confirm step and
        the evals' closed vocabulary both take their finalists here."""
        chosen = list(self.finalists(items, scores_of, count)) + list(also)
        best = self.order(items, scores_of)[0] if items else None
        chosen += [(i, f"shorter than {name_of(best)!r} and as strong")
                   for i in self.shorter(items, scores_of, name_of)[:MAX_SHORTER]]
        unique: dict[str, tuple[T, str]] = {}
        for item, why in chosen:
            unique.setdefault((key_of or name_of)(item), (item, why))
        return list(unique.values())

    # --- parsimony ---------------------------------------------------------------------
    def as_strong(self, candidate: Scores, winner: Scores, floor: float = -math.inf) -> bool:
        """Whether `candidate` is as strong as `winner`, within the noise of their images."""
        if candidate.auc < floor:
            return False
        if self.name == "auc":
            return candidate.auc >= winner.auc - AUC_TOLERANCE
        noise = max(AS_STRONG_Z * math.hypot(candidate.mad_se, winner.mad_se), AS_STRONG_SHARE * abs(winner.mad))
        mad_ok = candidate.mad >= winner.mad - noise
        if self.name == "top-share":
            one_image = 1 / max(1, min(candidate.images or 1, winner.images or 1))
            return candidate.top_share >= winner.top_share - one_image and mad_ok
        return mad_ok

    def choose(self, items: Sequence[T], scores_of: Callable[[T], Scores], name_of: Callable[[T], str],
               parsimony: bool = True) -> "Choice[T]":
        """The best item or, with `parsimony`, a shorter one as strong as it; with the
        reason in words."""
        ranked = self.order(items, scores_of)
        if not ranked:
            raise ValueError("nothing to choose from")
        floor = self.gate([scores_of(i) for i in items])
        best = ranked[0]
        shorter = self.shorter(items, scores_of, name_of) if parsimony else []
        winner = shorter[0] if shorter else best
        reason = self.describe(scores_of(best), name_of(best), floor, len(items))
        if winner is not best:
            w, b = scores_of(winner), scores_of(best)
            reason += (f" {name_of(winner)!r} is as strong ({self.value_text(w)} against {self.value_text(b)}, "
                       f"within the noise of their images) and shorter, so it is the label.")
        return Choice(winner, ranked, reason)

    # --- words ---------------------------------------------------------------------------
    def value_text(self, s: Scores) -> str:
        if self.name == "auc":
            return f"AUC {s.auc:.3f}"
        if self.name == "top-share":
            return f"top share {s.top_share:.0%}, MAD {s.mad:.2f}"
        return f"MAD {s.mad:.2f} ± {s.mad_se:.2f}"

    def describe(self, s: Scores, name: str, floor: float, compared: int) -> str:
        """Why `name` is first among `compared` concepts."""
        if self.name == "auc":
            return f"{name!r} has the highest AUC ({s.auc:.3f}) of {compared} concepts."
        if self.name == "mad":
            return f"{name!r} drives the unit hardest ({self.value_text(s)}) of {compared} concepts."
        if self.name == "top-share":
            return (f"{name!r} has the most images above the control's 99th percentile "
                    f"({self.value_text(s)}) of {compared} concepts.")
        return (f"{name!r} drives the unit hardest ({self.value_text(s)}, AUC {s.auc:.3f}) of the {compared} "
                f"concepts within {self.auc_gate:.2f} AUC of the best (gate: AUC ≥ {floor:.3f}).")


@dataclass(frozen=True)
class Choice(Generic[T]):
    winner: T
    ranked: list[T]
    reason: str


def _words(concept: str) -> int:
    return len(concept.split())
