"""One resolver for model specs: `load_target_model(spec)` turns a name, a scheme, a folder
or a hub id into a `TargetModel`, through two tables that other code extends.

- plain names, looked up exactly (`register_model_name`): ``efficientnet-lite0``;
- schemes, ``<prefix>:<rest>`` (`register_model_scheme`): ``timm:``, ``hf:``, ``live:``, and
  any scheme an installed package offers through the ``line_agent.models`` entry-point
  group (`PLUGIN_GROUP`), loaded the first time it is asked for: evals provides
  ``planted:<suite>`` this way, so tools never import evals;
- else ``package.module:factory`` or ``path/to/file.py:factory`` (`tools.models.factory`),
  run only when the code is trusted.

A loader is called as ``loader(rest, device)``, ``rest`` being the text after
``<prefix>:`` ("" for a plain name), and returns a `TargetModel` or an ``nn.Module``
(wrapped with 224 px and ImageNet statistics); `load_target_model` then sets ``name`` to
the full spec, moves the module to ``device`` and puts it in eval mode.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Union

import torch

from tools.devices import resolve_device
from tools.errors import LineError, UntrustedCode
from tools.models.efficientnet import NAME as EFFICIENTNET_LITE0
from tools.models.efficientnet import load_efficientnet_lite0
from tools.models.factory import load_factory, looks_like_factory
from tools.models.hf_models import load_hf
from tools.models.live import LIVE, needs_live_module
from tools.models.target import TargetModel, finished
from tools.models.timm_models import load_timm

DEFAULT_MODEL = EFFICIENTNET_LITE0
ModelLoader = Callable[[str, str], Union[TargetModel, torch.nn.Module]]

# plain names, looked up exactly, and schemes, `<prefix>:<rest>`
MODEL_NAMES: dict[str, ModelLoader] = {}
MODEL_SCHEMES: dict[str, ModelLoader] = {}
PLUGIN_GROUP = "line_agent.models"  # entry points named by scheme, each a ModelLoader

SPEC_FORMS = (
    "efficientnet-lite0 (default)",
    "timm:<name>",
    "hf:<hub id or local folder>",
    "package.module:factory",
    "path/to/file.py:factory",
)


def register_model_name(name: str, loader: ModelLoader) -> None:
    """Make `load_target_model(name)` call `loader("", device)`."""
    MODEL_NAMES[name] = loader


def register_model_scheme(prefix: str, loader: ModelLoader) -> None:
    """Make `load_target_model("<prefix>:<rest>")` call `loader(rest, device)`."""
    MODEL_SCHEMES[prefix.rstrip(":")] = loader


def accepted_forms() -> list[str]:
    forms = list(SPEC_FORMS)
    forms += [n for n in MODEL_NAMES if not any(f.startswith(n + " ") or f == n for f in forms)]
    schemes = dict.fromkeys([*MODEL_SCHEMES, *(ep.name for ep in entry_points(group=PLUGIN_GROUP))])
    forms += [f"{p}:..." for p in schemes if p not in ("timm", "hf")]
    return forms


def _scheme(prefix: str) -> ModelLoader | None:
    """The loader of a scheme: registered, or from an installed package's entry point."""
    if prefix not in MODEL_SCHEMES:
        for ep in entry_points(group=PLUGIN_GROUP, name=prefix):
            try:
                register_model_scheme(prefix, ep.load())
            except ImportError as exc:
                raise LineError(f"model scheme {prefix!r} ({ep.value}) cannot be imported ({exc}).",
                                "Reinstall the package that provides it (for planted: `make setup`).") from exc
    return MODEL_SCHEMES.get(prefix)


def load_target_model(spec: str = DEFAULT_MODEL, device: str = "cpu", trust_code: bool = True) -> TargetModel:
    """Resolve `spec` to a `TargetModel` in eval mode on `device`. With `trust_code=False`
    a spec that names code to import (`package.module:factory`, `file.py:factory`) raises
    `UntrustedCode` instead of running it."""
    spec = (spec or DEFAULT_MODEL).strip()
    device = resolve_device(device, "device")
    if spec in MODEL_NAMES:
        loaded = MODEL_NAMES[spec]("", device)
    else:
        prefix, sep, rest = spec.partition(":")
        scheme = _scheme(prefix) if sep else None
        if scheme is not None:
            loaded = scheme(rest.strip(), device)
        elif sep and looks_like_factory(spec):
            if not trust_code:
                raise UntrustedCode(
                    f"model {spec!r} is code named in a run folder; it is not run unless you trust the run.",
                    "Pass --trust-run (or give the same --model) if you trust whoever wrote the run.",
                )
            loaded = load_factory(spec, device)
        else:
            raise LineError(
                f"unknown model {spec!r}.",
                "Use one of: " + "; ".join(accepted_forms()) + ".",
            )
    return finished(loaded, spec, device)


register_model_name(DEFAULT_MODEL, load_efficientnet_lite0)
register_model_scheme(LIVE, needs_live_module)
register_model_scheme("timm", load_timm)
register_model_scheme("hf", load_hf)
