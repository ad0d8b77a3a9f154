"""What every door of the Python API shares: settings from keywords (as the command's flags),
a model given as a spec or a torch module in memory, a layer given by name or as the
submodule, units, and the checks of the values a caller passes."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import BaseModel

from agent.config import Settings, load_settings
from agent.runs.engine_factory import build_engine
from tools.engine import Engine, parse_units
from tools.errors import LineError

if TYPE_CHECKING:
    from tools.models import TargetModel

LIVE_KEYWORDS = ("preprocess", "input_size", "mean", "std")
SECTIONS = {name: info.annotation for name, info in Settings.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)}


# --- settings and models from keywords -----------------------------------------------------------
def overrides(keywords: dict[str, Any]) -> dict[str, Any]:
    """Keyword settings as `load_settings` overrides; an unknown or ambiguous key is a LineError."""
    result: dict[str, Any] = {}
    for key, value in keywords.items():
        if key == "generator" and isinstance(value, str):  # the --generator flag's form
            kind, _, model = value.partition(":")
            value = {"kind": kind, **({"model": model} if model else {})}
        if key in SECTIONS and isinstance(value, dict):
            result.setdefault(key, {}).update(value)
            continue
        if key in Settings.model_fields:
            result[key] = value
            continue
        owners = [name for name, section in SECTIONS.items() if key in section.model_fields]
        if len(owners) > 1:
            raise LineError(f"setting {key!r} is in sections {' and '.join(owners)}.",
                            f"Say which: {owners[0]}={{{key!r}: ...}}.")
        if not owners:
            known = [*Settings.model_fields, *(k for section in SECTIONS.values() for k in section.model_fields)]
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise LineError(f"unknown setting {key!r}" + (f" (did you mean {near[0]}?)." if near else "."),
                            "See README.md, section Configuration, for the settings.")
        result.setdefault(owners[0], {})[key] = value
    return result


def live_model(module: Any, keywords: dict[str, Any]) -> TargetModel | None:
    """A module in memory as a TargetModel (its preprocessing keywords taken out of
    `keywords`); None for a spec string, which brings its own preprocessing."""
    given = {k: keywords.pop(k) for k in LIVE_KEYWORDS if k in keywords}
    if module is None or isinstance(module, str):
        if given:
            raise LineError(f"{', '.join(k + '=' for k in given)} apply to a torch module in memory, not to a model spec.",
                            "Leave them out: a model spec brings its own preprocessing.")
        return None
    from tools.models import live_target_model

    return live_target_model(module, device=keywords.get("device"), **given)


def layer_name(layer: Any, target: TargetModel | None) -> str | None:
    """A layer given by its dotted name, or as the submodule itself."""
    if layer is None or isinstance(layer, str):
        return layer
    import torch

    if not isinstance(layer, torch.nn.Module):
        raise LineError(f"layer is a {type(layer).__name__}.", "Pass its dotted name (e.g. '_blocks.6') or the submodule.")
    if target is None:
        raise LineError("a layer given as a module needs the model as a module too.",
                        "Pass the layer's dotted name with a model spec (`line layers --model <spec>` lists them).")
    name = next((n for n, m in target.module.named_modules() if m is layer and n), None)
    if name is None:
        raise LineError(f"the layer ({type(layer).__name__}) is not a submodule of the model ({type(target.module).__name__}).",
                        "Pass a submodule of the model, or its dotted name (model.named_modules() lists them).")
    return name


@dataclass
class Setup:
    """Settings and engine of one call, with the module in memory where there is one."""

    settings: Settings
    engine: Engine
    target: TargetModel | None

    @classmethod
    def of(cls, model: Any, layer: Any, config: str | Path | None, keywords: dict[str, Any]) -> "Setup":
        settings, target = settings_of(model, layer, config, keywords)
        return cls(settings, build_engine(settings, model=target), target)


def settings_of(model: Any, layer: Any, config: str | Path | None,
                keywords: dict[str, Any]) -> tuple[Settings, TargetModel | None]:
    """The settings of a call (the config file, then `model`, `layer` and the keywords) and
    the module in memory where `model` is one."""
    keywords = dict(keywords)
    target = live_model(model, keywords)  # the fingerprint is computed here, once per call
    chosen = {"model": target.name if target else model, "layer": layer_name(layer, target),
              "device": target.device if target else None}
    return load_settings(config, **overrides({**{k: v for k, v in chosen.items() if v is not None}, **keywords})), target


def unit_list(units: int | str | Iterable[int], engine: Engine) -> list[int]:
    """17, '0-9', '1,5,9-12', 'all' or a list of ints -> checked unit indices, each once
    (`Engine.check_unit`, the one unit check of every door)."""
    if isinstance(units, str):
        return parse_units(units, engine.units, engine.layer)
    chosen = list(units) if isinstance(units, Iterable) and not isinstance(units, (bytes, dict)) else [units]
    if not chosen:
        raise LineError("units= is empty.", f"Pass a unit (0..{engine.units - 1}), a list of them, '0-9' or 'all'.")
    return list(dict.fromkeys(engine.check_unit(u) for u in chosen))


def run_unit(unit: Any) -> int:
    """`unit` of a run as an int (17, numpy's 17, 17.0), or a LineError: '17' or True is no unit."""
    try:
        index = int(unit)
        whole = index == unit and not isinstance(unit, bool)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise LineError(f"unit {unit!r} is not a unit number.", "Pass the unit as a whole number, e.g. run.label(17).")
    return index


def chat_model(chat: Any) -> Any:
    """`chat` when it is a LangChain chat model (or None), else a LineError: a name is no model."""
    if chat is None:
        return None
    from langchain_core.language_models import BaseChatModel

    if not isinstance(chat, BaseChatModel):
        raise LineError(f"chat={chat!r} is a {type(chat).__name__}, not a LangChain chat model.",
                        "Pass e.g. chat=ChatOpenAI(model='gpt-4o-mini'), or set provider='openai', model='gpt-4o-mini'.")
    return chat


def text_setting(value: Any, name: str, example: str) -> str:
    """`value` when it is text, else a LineError naming `name`."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise LineError(f"{name}={value!r} is not {'a folder' if name.endswith('_dir') else 'text'}.", f"Pass e.g. {name}={example!r}.")
    return str(value)


def pandas_module():
    try:
        import pandas
    except ImportError as error:
        raise LineError("to_pandas() needs pandas, which is not installed.", "Run `pip install pandas`.") from error
    return pandas

