"""Every forward hook on a target model: activations of all units of one layer, in one
forward pass per batch, and the model's layers with their output shapes and units.

A forward hook on the layer captures its output and reduces it to one number per unit:
N x C x H x W -> the spatial mean (N x C); N x T x D (transformer tokens) -> the CLS token
(N x D); N x D as is. The hook then stops the forward, so later layers cost nothing.
`unit_maps` keeps one unit's H x W map instead (where the unit fires, for the reports).

Hooks live on the module, so hooked forwards through one module never overlap
(`module_lock`). What they learn about layers is kept in the model's public
`TargetModel.layer_cache` (`tools.models.LayerCache`): unit counts and the layer list.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from tools.errors import LineError, check_unit_index
from tools.models import LayerInfo, TargetModel

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


class _StopForward(Exception):
    """Raised by the capture hook to end the forward right after the layer."""


def primary_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, the first element of a tuple or
    list, `last_hidden_state` or the first tensor of a ModelOutput-like mapping; else None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return primary_tensor(output[0]) if len(output) else None
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    if isinstance(output, Mapping):
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    return None


def reduce_output(output: Any) -> torch.Tensor:
    """One value per unit and image: N x C x H x W -> mean over H, W; N x T x D -> the CLS
    token [:, 0, :]; N x D as is."""
    t = primary_tensor(output)
    if t is None:
        raise LineError(
            f"the layer's output is a {type(output).__name__}, not a tensor.",
            "Pick another layer (`line layers --model <name>` lists layers with tensor outputs).",
        )
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t[:, 0, :]
    if t.dim() == 2:
        return t
    raise LineError(
        f"cannot reduce a layer output of shape {tuple(t.shape)} to units (expected N x C x H x W, N x T x D or N x D).",
        "Pick another layer (`line layers --model <name>` lists usable layers).",
    )


def _as_batch(model: TargetModel, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise LineError(
            f"image tensor of shape {tuple(x.shape)} is not N x 3 x H x W.",
            "Pass PIL images, or tensors made by TargetModel.preprocess.",
        )
    x = x.to(device=model.device, dtype=model.dtype)
    return x.contiguous(memory_format=torch.channels_last) if model.channels_last else x


def _batch_size(model: TargetModel, batch_size: int | None) -> int:
    """Images per forward: `batch_size` where given, else the model's (TargetModel.forward_batch)."""
    return max(1, int(batch_size or model.forward_batch))


def _forward_with(model: TargetModel, x: torch.Tensor, hooks: list[tuple[torch.nn.Module, Callable]]) -> None:
    """One forward of `x` with these forward hooks on (under the module's lock, so hooked
    forwards never overlap); a hook may end it early by raising `_StopForward`."""
    with module_lock(model.module):
        handles = [module.register_forward_hook(hook) for module, hook in hooks]
        try:
            with torch.inference_mode():
                model.module(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()


def _capture(model: TargetModel, module: torch.nn.Module, layer: str, x: torch.Tensor,
             reduce: Callable[[Any], torch.Tensor] = reduce_output) -> np.ndarray:
    captured: list[torch.Tensor] = []

    def hook(mod, inputs, output):
        if not captured:
            captured.append(reduce(output).float().cpu())
        raise _StopForward

    _forward_with(model, x, [(module, hook)])
    if not captured:
        raise LineError(
            f"layer {layer} of model {model.name} did not run in the model's forward.",
            f"Pick a layer that the forward uses (`line layers --model {model.name}`).",
        )
    return captured[0].numpy().astype(np.float32, copy=False)


def layer_activations(
    model: TargetModel,
    layer: str,
    images: list[Image.Image] | torch.Tensor,
    batch_size: int | None = None,
) -> np.ndarray:
    """images x units float32 activations of every unit of `layer`."""
    module = model.layer(layer)
    n = len(images)
    if n == 0:
        return np.zeros((0, unit_count(model, layer)), dtype=np.float32)
    batch_size = _batch_size(model, batch_size)
    parts = []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        x = chunk if isinstance(chunk, torch.Tensor) else model.preprocess(list(chunk))
        parts.append(_capture(model, module, layer, _as_batch(model, x)))
    acts = np.concatenate(parts, axis=0)
    model.layer_cache.units.setdefault(layer, int(acts.shape[1]))
    return acts


def layers_activations(model: TargetModel, layers: list[str], images: list[Image.Image],
                       batch_size: int | None = None) -> dict[str, np.ndarray]:
    """images x units activations of several layers from ONE forward per batch: a hook on
    each layer captures its first output, and the forward stops once all have run (later
    layers cost nothing)."""
    modules = {layer: model.layer(layer) for layer in dict.fromkeys(layers)}
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in modules}
    batch_size = _batch_size(model, batch_size)
    for start in range(0, len(images), batch_size):
        x = _as_batch(model, model.preprocess(list(images[start : start + batch_size])))
        for layer, acts in _capture_all(model, modules, x).items():
            parts[layer].append(acts)
    result = {}
    for layer, chunks in parts.items():
        units = unit_count(model, layer)
        result[layer] = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, units), np.float32)
    return result


def _capture_all(model: TargetModel, modules: dict[str, torch.nn.Module], x: torch.Tensor) -> dict[str, np.ndarray]:
    captured: dict[str, torch.Tensor] = {}

    def make_hook(layer: str):
        def hook(mod, inputs, output):
            if layer not in captured:
                captured[layer] = reduce_output(output).float().cpu()
            if len(captured) == len(modules):
                raise _StopForward

        return hook

    _forward_with(model, x, [(module, make_hook(layer)) for layer, module in modules.items()])
    missing = [layer for layer in modules if layer not in captured]
    if missing:
        raise LineError(f"layer {missing[0]} of model {model.name} did not run in the model's forward.",
                        f"Pick a layer that the forward uses (`line layers --model {model.name}`).")
    return {layer: t.numpy().astype(np.float32, copy=False) for layer, t in captured.items()}


def unit_maps(model: TargetModel, layer: str, images: list[Image.Image], unit: int,
              batch_size: int | None = None) -> np.ndarray | None:
    """images x H x W: one unit's spatial map on each image (the layer's N x C x H x W output
    before the spatial mean, channel `unit`), aligned with the model's input crop
    (`TargetModel.input_box`); None when the layer's output has no spatial map (N x T x D,
    N x D)."""
    module = model.layer(layer)
    spatial: list[bool] = []

    def channel(output: Any) -> torch.Tensor:
        t = primary_tensor(output)
        spatial.append(t is not None and t.dim() == 4)
        return t[:, unit] if spatial[-1] else reduce_output(output)[:, :1]

    parts = []
    batch_size = _batch_size(model, batch_size)
    for start in range(0, len(images), batch_size):
        chunk = model.preprocess(list(images[start : start + batch_size]))
        parts.append(_capture(model, module, layer, _as_batch(model, chunk), channel))
        if not spatial[-1]:
            return None
    return np.concatenate(parts, axis=0) if parts else None


def unit_count(model: TargetModel, layer: str) -> int:
    """Number of units of `layer` (after reduction); one early-stopped dummy forward, cached
    in `model.layer_cache.units`."""
    units = model.layer_cache.units
    if layer not in units:
        module = model.layer(layer)
        units[layer] = int(_capture(model, module, layer, model.dummy_input(1)).shape[1])
    return units[layer]


def layer_infos(model: TargetModel) -> list[LayerInfo]:
    """Every module of `model` whose output is a tensor, in module order, with its output
    shape per image and its units: one dummy forward with hooks on all modules, cached in
    `model.layer_cache` (the unit counts too).

    A module called several times in one forward (a shared activation, say) is described
    by its first call, as `layer_activations` captures its first call too.
    """
    cache = model.layer_cache
    if cache.infos is not None:
        return list(cache.infos)
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

    with module_lock(model.module):
        try:
            for name, mod in model.module.named_modules():
                if name:
                    handles.append(mod.register_forward_hook(make_hook(name)))
            with torch.inference_mode():
                model.module(model.dummy_input(1))
        finally:
            for h in handles:
                h.remove()
    cache.infos = [LayerInfo(n, *seen[n]) for n in model.layer_names() if n in seen]
    cache.units.update({info.name: info.units for info in cache.infos})
    return list(cache.infos)


def check_unit(model: TargetModel, layer: str, unit: int) -> int:
    """`unit` as an int, or a LineError when the layer has no such unit."""
    return check_unit_index(unit, unit_count(model, layer), layer)
