"""Choosing layers by name: `_blocks.1,_blocks.3`, globs like `_blocks.*` (a `*` or `?`
does not cross a dot, so `_blocks.*` is the block outputs, not their inner modules)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from tools.errors import LineError

if TYPE_CHECKING:
    from tools.models import TargetModel


def _pattern(glob: str) -> re.Pattern:
    parts = []
    for char in glob:
        parts.append("[^.]*" if char == "*" else "[^.]" if char == "?" else re.escape(char))
    return re.compile("".join(parts))


def select_layers(text: str, names: Sequence[str], model: str = "the model") -> list[str]:
    """The layers of `names` (a model's layers, in module order) that `text` names: a comma
    list of names and globs. In the model's order, each once; a name or glob that matches
    nothing is a LineError naming it."""
    wanted = [part.strip() for part in str(text).split(",") if part.strip()]
    if not wanted:
        raise LineError(f"no layers in {text!r}.", "Name layers like _blocks.1,_blocks.3 or a glob like '_blocks.*' "
                                                 f"(see `line layers --model {model}`).")
    chosen: set[str] = set()
    for part in wanted:
        if "*" in part or "?" in part:
            pattern = _pattern(part)
            hits = [n for n in names if pattern.fullmatch(n)]
        else:
            hits = [part] if part in names else []
        if not hits:
            raise LineError(f"layer {part!r} matches no layer of {model}.",
                            f"List the layers with `line layers --model {model}`; in a glob, * does not cross a dot.")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def model_layers(layers: str | Sequence[str], model: TargetModel, spec: str) -> list[str]:
    """The layers of a loaded `model` (its spec `spec`) that `layers` names: a comma list of
    names and globs as text, or a list of them (`select_layers`, among the layers with tensor
    outputs that `tools.activations.layer_infos` lists)."""
    from tools.activations import layer_infos

    if not isinstance(layers, str) and not (isinstance(layers, Sequence) and all(isinstance(l, str) for l in layers)):
        raise LineError(f"layers={layers!r} is no list of layer names.", "Pass e.g. layers=['_blocks.1', '_blocks.3'] "
                                                                       "or layers='_blocks.*'.")
    names = [info.name for info in layer_infos(model)]
    return select_layers(layers if isinstance(layers, str) else ",".join(layers), names, spec)
