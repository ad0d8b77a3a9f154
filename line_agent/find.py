"""`line_agent.find`: the units of a network's layers that respond most to a concept, as
`line find` lists them (agent.runs.find does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from agent.config import MAX_IMAGES_PER_CONCEPT
from agent.runs.find import Found, FoundUnit, find_units
from line_agent.setup import layer_name, pandas_module, settings_of
from tools.errors import LineError
from tools.scoring import Scores

if TYPE_CHECKING:
    import pandas


class UnitsFound(Sequence[FoundUnit]):
    """The best units over all layers, best first by the criterion (`found[0]` is the best;
    each has .layer, .unit, .auc, .mad, .scores), with each layer's best in `layers`."""

    def __init__(self, found: Found, model: str):
        self.concept, self.model, self.criterion = found.concept, model, found.criterion.name
        self.interpretation = found.interpretation
        self.layers: dict[str, list[FoundUnit]] = found.layers
        self.overall: list[FoundUnit] = found.overall
        self.nonfinite: dict[str, list[int]] = found.nonfinite

    def __getitem__(self, index):
        return self.overall[index]

    def __len__(self) -> int:
        return len(self.overall)

    def rows(self) -> list[dict]:
        """Every unit listed, as dicts: the overall best first, then the rest of each layer's
        best; `overall_rank` and `layer_rank` (from 1; None where it is not listed there)."""
        overall = {(u.layer, u.unit): rank for rank, u in enumerate(self.overall, 1)}
        in_layer = {(u.layer, u.unit): rank for units in self.layers.values() for rank, u in enumerate(units, 1)}
        listed = {(u.layer, u.unit): u for u in [*self.overall, *(u for units in self.layers.values() for u in units)]}
        return [{"layer": u.layer, "unit": u.unit, "overall_rank": overall.get((u.layer, u.unit)),
                 "layer_rank": in_layer.get((u.layer, u.unit)), **u.scores.model_dump()} for u in listed.values()]

    def to_pandas(self) -> pandas.DataFrame:
        """`rows()` as a DataFrame (pandas needed)."""
        columns = ["layer", "unit", "overall_rank", "layer_rank", *Scores.model_fields]
        table = pandas_module().DataFrame(self.rows(), columns=columns)
        return table.astype({"overall_rank": "Int64", "layer_rank": "Int64"})  # a rank not listed: <NA>, not NaN

    def __repr__(self) -> str:
        best = ", ".join(f"{u.layer}/{u.unit}: AUC {u.auc:.3f} MAD {u.mad:.2f}" for u in self.overall[:3])
        layers = f"{len(self.layers)} layer{'s' * (len(self.layers) != 1)}"
        return f"UnitsFound({self.concept!r}, {layers} of {self.model}, by {self.criterion}; best {best})"

    def _repr_html_(self) -> str | None:
        try:
            return self.to_pandas()._repr_html_()
        except LineError:  # no pandas: Jupyter shows the repr
            return None


def find(concept: str, model: Any, layers: Any, top: int = 5, *, config: str | Path | None = None,
         images: int | None = None, **settings: Any) -> UnitsFound:
    """The `top` units of each of `layers` that `concept` drives most, and the `top` over
    all of them, ranked by the run's criterion (`loop.criterion`), like `line find`.

    `model`: a spec string or a torch module in memory (with `preprocess=` or `input_size=`,
    `mean=`, `std=`, as for `score`). `layers`: names and globs as text ('_blocks.*',
    '_blocks.1,_blocks.3'; a * does not cross a dot), or a list of names or submodules.
    `images`: images of the concept (default loop.images_per_concept). The concept's
    images render once for all layers; the layers share one loaded model."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise LineError(f"top={top!r} is not a whole number of units from 1.", "Pass top=5, say.")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int)
                               or not 1 <= images <= MAX_IMAGES_PER_CONCEPT):
        raise LineError(f"images={images!r} is not a whole number of images from 1 to {MAX_IMAGES_PER_CONCEPT}.",
                        "Pass images=4, say.")
    chosen, target = settings_of(model, None, config, settings)
    found = find_units(chosen, concept, _layers_text(layers, target), top, images, model=target)
    return UnitsFound(found, chosen.model)


def _layers_text(layers: Any, target) -> str:
    """`layers` as the text `select_layers` reads: text as it is, a list joined by commas."""
    if isinstance(layers, str):
        return layers
    if isinstance(layers, Sequence) and layers:
        return ",".join(layer_name(layer, target) for layer in layers)
    if layers is not None and not isinstance(layers, Sequence):
        return layer_name(layers, target)  # one submodule
    raise LineError(f"layers={layers!r} names no layer.", "Pass names or globs like '_blocks.*', or a list of them.")
