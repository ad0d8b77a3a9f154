"""``package.module:factory`` and ``path/to/file.py:factory``: code that returns an
``nn.Module`` (or a ready `TargetModel`); the module may define ``input_size``, ``mean``,
``std`` and ``interpolation``. A spec that names code runs it only when trusted
(`tools.models.load_target_model(..., trust_code=...)`)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import torch

from tools.errors import LineError
from tools.fingerprint import file_digest
from tools.models.target import IMAGENET_MEAN, IMAGENET_STD, TargetModel


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def looks_like_factory(spec: str) -> bool:
    mod, _, attr = spec.rpartition(":")
    return bool(_IDENT.match(attr)) and (bool(_DOTTED.match(mod)) or mod.endswith(".py"))


def _import_module(mod: str):
    if mod.endswith(".py"):
        path = Path(mod).expanduser().resolve()
        if not path.is_file():
            raise LineError(f"no Python file {mod!r}.", "Give an existing file: path/to/file.py:factory.")
        name = f"_line_factory_{abs(hash(str(path)))}_{file_digest(path)[:12]}"  # an edited file is imported anew
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            raise
        return module
    cwd = os.getcwd()
    if cwd not in sys.path:  # like `python -m`, let `line` import modules next to the user
        sys.path.append(cwd)
    return importlib.import_module(mod)


def load_factory(spec: str, device: str) -> TargetModel:
    mod_name, _, attr = spec.rpartition(":")
    try:
        mod = _import_module(mod_name)
    except LineError:
        raise
    except ImportError as exc:
        raise LineError(
            f"cannot import {mod_name!r} for model {spec!r} ({exc}).",
            "Check the module path (run from the folder that contains the package), or use path/to/file.py:factory.",
        ) from exc
    except (Exception, SystemExit) as exc:  # a SyntaxError, or the module's own code failing as it is imported
        raise LineError(f"importing {mod_name!r} for model {spec!r} failed: {_described(exc)}.",
                        f"Fix {mod_name} (import it in Python to see the traceback).") from exc
    factory = getattr(mod, attr, None)
    if not callable(factory):
        names = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        near = difflib.get_close_matches(attr, names, n=5, cutoff=0.5)
        raise LineError(
            f"{mod_name!r} has no function {attr!r}" + (f" (nearest: {', '.join(near)})." if near else "."),
            f"Use {mod_name}:<function returning an nn.Module>.",
        )
    try:
        result = factory()
    except (Exception, SystemExit) as exc:  # a factory that exits would end `line` silently
        raise LineError(f"model factory {spec} failed: {_described(exc)}.",
                        f"Fix {attr}() in {mod_name} (call it in Python to see the traceback).") from exc
    if isinstance(result, TargetModel):
        return result
    if not isinstance(result, torch.nn.Module):
        raise LineError(
            f"{spec} returned a {type(result).__name__}, not a torch.nn.Module.",
            "Make the factory return an nn.Module (or a TargetModel).",
        )
    size = getattr(mod, "input_size", 224)
    if isinstance(size, (tuple, list)) and size:
        size = size[-1]
    return TargetModel(  # the values are checked by `finished` (a LineError naming the factory and the value)
        name=spec,
        module=result,
        input_size=size,
        mean=getattr(mod, "mean", IMAGENET_MEAN),
        std=getattr(mod, "std", IMAGENET_STD),
        interpolation=str(getattr(mod, "interpolation", "bilinear")),
    )


def _described(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    if isinstance(exc, SyntaxError):
        return f"SyntaxError in {exc.filename}, line {exc.lineno}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"
