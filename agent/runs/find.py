"""The units of several layers that respond most to one concept (`line find`, `line_agent.find`).

The concept is checked as `line score` checks it and scored for every unit of each layer,
one engine per layer (`build_engines`): they share one target model and one image cache,
so the concept's images render once and go through the model once for all layers
(`tools.engine.prepare_layers`). Units are
ranked by the run's criterion (`loop.criterion`), within each layer and over all layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from agent.config import Settings
from agent.runs.engine_factory import build_engines, model_loader
from tools.concepts import check_concept
from tools.criterion import Criterion
from tools.engine import Engine, Progress, prepare_layers
from tools.errors import LineError
from tools.generators.base import Interpretation
from tools.layer_select import model_layers
from tools.scoring import Scores

if TYPE_CHECKING:
    from tools.models import TargetModel


@dataclass(frozen=True)
class FoundUnit:
    """A unit of a layer and its scores for the concept."""

    layer: str
    unit: int
    scores: Scores

    auc = property(lambda self: self.scores.auc)
    mad = property(lambda self: self.scores.mad)

    def row(self) -> dict:
        """The unit as a table row: layer, unit and every score (auc, mad, ...)."""
        return {"layer": self.layer, "unit": self.unit, **self.scores.model_dump()}


@dataclass
class Found:
    """What `find_units` found: each layer's best units and the best over all layers, best
    first by `criterion`; units whose activations are not finite are left out (`nonfinite`)."""

    concept: str
    interpretation: Interpretation
    criterion: Criterion
    layers: dict[str, list[FoundUnit]]
    overall: list[FoundUnit]
    nonfinite: dict[str, list[int]]
    engines: list[Engine]


def find_units(settings: Settings, concept: str, layers: str | Sequence[str], top: int = 5, images: int | None = None,
               progress: Callable[[str], Progress | None] | None = None,
               model: TargetModel | None = None) -> Found:
    """The `top` units of each layer that `concept` drives most, and the `top` over all of
    them. `layers`: text of names and globs, or names already chosen (each checked when
    the model loads). `images`: images of the concept (default loop.images_per_concept);
    `progress(layer)`: a progress callback for that layer's work; `model`: the target
    model already loaded (a module in memory)."""
    load_model = model_loader(settings, model=model)
    names = model_layers(layers, load_model(), settings.model) if isinstance(layers, str) else list(layers)
    if not names:
        raise LineError("no layers to search.", f"Name layers, e.g. '_blocks.*' (see `line layers --model {settings.model}`).")
    engines = build_engines(settings, names, progress, load_model)
    concept = check_concept(concept, engines[0].generator)  # before any image is rendered
    criterion = settings.loop.judge()
    ranked: dict[str, list[FoundUnit]] = {}
    nonfinite: dict[str, list[int]] = {}
    if len(engines) > 1:  # one forward a batch for all layers; each engine then reads its cache
        prepare_layers(engines, [concept], engines[0].seeds(images))
    for engine in engines:
        units, nonfinite[engine.layer] = layer_units(engine, concept, images)
        ranked[engine.layer] = criterion.order(units, _scores)
    everything = [unit for units in ranked.values() for unit in units]
    return Found(concept, engines[0].generator.interpret(concept), criterion,
                 {layer: units[:top] for layer, units in ranked.items()}, criterion.order(everything, _scores)[:top],
                 {layer: units for layer, units in nonfinite.items() if units}, engines)


def layer_units(engine: Engine, concept: str, images: int | None = None) -> tuple[list[FoundUnit], list[int]]:
    """Every unit of the engine's layer with its scores for `concept`, but those whose
    activations are not finite (NaN scores would break any order): those, apart."""
    evidence = engine.evaluate(concept, engine.seeds(images))
    every = range(evidence.activations.shape[1])
    nonfinite = engine.nonfinite_units(every, evidence.activations)
    skipped = set(nonfinite)
    return [FoundUnit(engine.layer, u, evidence.scores(u)) for u in every if u not in skipped], nonfinite


def _scores(found: FoundUnit) -> Scores:
    return found.scores
