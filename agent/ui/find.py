"""`line find CONCEPT --layers GLOBS`: the units of a network's layers that respond most to a
concept, per layer and overall (agent.runs.find does the work; this prints it)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from agent.runs.find import Found, FoundUnit, find_units
from agent.ui.console import console, err_console, progress, settings_from_args
from agent.ui.terminal import safe
from tools.errors import LineError
from tools.scoring import strict_json

if TYPE_CHECKING:
    from agent.config import Settings


def cmd_find(args: argparse.Namespace) -> None:
    if args.layers is not None and args.layer is not None:
        raise LineError(f"--layers {args.layers!r} and --layer {args.layer!r} exclude each other.",
                        "Pass one: --layer for one layer, --layers for names and globs like '_blocks.*'.")
    settings = settings_from_args(args)
    layers = args.layers if args.layers is not None else [settings.layer]
    found = find_units(settings, args.concept, layers, args.top, args.images, _progress_of_layer)
    result = found_json(found, settings)
    _warn(found)
    if args.json:
        print(strict_json(result))
        return
    console.print(f"[bold]{safe(repr(found.concept))}[/] on {safe(settings.model)} vs {safe(result['control'])}, "
                  f"best first by {safe(found.criterion.name)}")
    interpretation = found.interpretation
    console.print(safe(f"generator {result['generator']}: understood {interpretation.understood or '-'}, "
                       f"ignored {interpretation.ignored or '-'}, canonical {interpretation.canonical!r}"))
    for layer, units in found.layers.items():
        console.print(_table(f"layer {layer}", units, with_layer=False))
    if len(found.layers) > 1:
        console.print(_table(f"overall, {len(found.layers)} layers", found.overall, with_layer=True))
    stats = result["cache"]
    console.print(f"cache: images {stats.get('image_hit', 0)} hit / {stats.get('images_generated', 0)} generated, "
                  f"activations {stats.get('activation_hit', 0)} hit / {stats.get('activation_miss', 0)} computed")


def found_json(found: Found, settings: Settings) -> dict:
    """What `line find --json` prints."""
    engine = found.engines[0]
    interpretation = found.interpretation
    result = {
        "model": settings.model, "concept": found.concept, "criterion": found.criterion.name,
        "control": f"{engine.control.spec} ({len(engine.control)} images, mode {settings.loop.control_mode})",
        "generator": engine.generator.id, "understood": interpretation.understood, "ignored": interpretation.ignored,
        "canonical": interpretation.canonical,
        "layers": [{"layer": layer, "units": [u.row() for u in units]} for layer, units in found.layers.items()],
        "overall": [u.row() for u in found.overall],
        "cache": dict(sorted(engine.cache.stats.items())),
    }
    if found.nonfinite:
        result["nonfinite_units"] = found.nonfinite
    return result


def _table(title: str, units: list[FoundUnit], with_layer: bool) -> Table:
    table = Table(title=safe(title))
    for column in ("rank", *(("layer",) if with_layer else ()), "unit", "AUC", "MAD"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for rank, found in enumerate(units, 1):
        table.add_row(str(rank), *((safe(found.layer),) if with_layer else ()), str(found.unit),
                      f"{found.scores.auc:.3f}", f"{found.scores.mad:.2f}")
    return table


def _warn(found: Found) -> None:
    """On stderr: words of the concept the generator cannot draw, and units left unranked."""
    ignored = found.interpretation.ignored
    if ignored:
        err_console.print(safe(f"warning: the generator does not understand {', '.join(map(repr, ignored))}: "
                               f"the images show {found.interpretation.canonical or found.concept!r} without "
                               f"{'it' if len(ignored) == 1 else 'them'}."), highlight=False, soft_wrap=True)
    for layer, units in found.nonfinite.items():
        err_console.print(safe(f"warning: units {', '.join(map(str, units[:20]))}{' ...' if len(units) > 20 else ''} "
                               f"of layer {layer} give NaN or inf activations; they are not ranked."),
                          highlight=False, soft_wrap=True)


def _progress_of_layer(layer: str):
    """The progress bar of one layer's work (rendering images, activations), on stderr."""
    return progress(safe(layer))
