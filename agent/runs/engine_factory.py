"""The engine of a configuration: target model, generator, control set and caches.

Kept apart from the graph modules so that `line score` starts without LangGraph.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Sequence

from agent.config import GeneratorConfig, Settings
from agent.runs.store import open_store
from tools.cache import DiskCache
from tools.control import AUTO, DEFAULT_PROCEDURAL, load_control_set, natural_images
from tools.engine import Engine, Progress
from tools.fingerprint import model_fingerprint
from tools.generators.base import ImageGenerator

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tools.models import TargetModel


def make_generator(config: GeneratorConfig) -> ImageGenerator:
    if config.kind == "procedural":
        from tools.generators.procedural import ProceduralGenerator

        return ProceduralGenerator(size=config.size or 224)
    from tools.generators.diffusion import DiffusersGenerator

    return DiffusersGenerator(model=config.model, steps=config.steps, guidance_scale=config.guidance_scale,
                              size=config.size or 512, batch_size=config.batch_size, device=config.device,
                              dtype=config.dtype)


def control_spec(settings: Settings) -> str:
    """The control set of `settings`, with "auto" resolved by the generator: drawings for the
    procedural generator (procedural:300), natural photos with classes for a photo generator
    (tools.control.natural_images)."""
    if settings.control != AUTO:
        return settings.control
    return DEFAULT_PROCEDURAL if settings.generator.kind == "procedural" else natural_images()


def model_loader(settings: Settings, trust_code: bool = True,
                 model: TargetModel | None = None) -> Callable[[], TargetModel]:
    """The target model of `settings`, loaded on the first call and kept: engines that share
    the loader (a network run's layers) load the model once. `model`: already loaded."""
    held: list[TargetModel] = [] if model is None else [model]
    lock = threading.Lock()

    def load_model() -> TargetModel:
        with lock:  # two threads asking at once load it once
            if not held:
                from tools.models import load_target_model

                held.append(load_target_model(settings.model, settings.device, trust_code=trust_code))
            return held[0]

    return load_model


def build_engine(settings: Settings, progress: Progress | None = None, trust_code: bool = True,
                 model: TargetModel | None = None, *, loader: Callable[[], TargetModel] | None = None,
                 generator: ImageGenerator | None = None) -> Engine:
    """The engine of `settings`; its target model loads on first use (torch with it), or is
    `model`, already loaded (a module in memory: `tools.models.live_target_model`).
    `loader` and `generator`: a model loader (`model_loader`) and a generator that other
    engines share (a network run's layers: one model and one pipeline in memory).

    With `trust_code=False` (settings read from a run folder nobody vouched for) a model
    spec that names code (`package.module:factory`, `file.py:factory`) is never imported:
    needing the model raises `UntrustedCode` instead."""
    load_model = loader or model_loader(settings, trust_code, model)
    control = control_spec(settings)
    if settings.generator.kind != "procedural" and control.startswith("procedural:"):
        _warn_drawings_for_photos(control, settings.generator.kind)
    cache = DiskCache(settings.cache_dir)
    return Engine(
        settings.model, load_model, settings.layer,
        generator or make_generator(settings.generator),
        load_control_set(control, cache), cache,
        images_per_concept=settings.loop.images_per_concept, control_mode=settings.loop.control_mode,
        progress=progress, fingerprint=model_fingerprint(settings.model), banks=open_store(settings).bank,
    )


def build_engines(settings: Settings, layers: Sequence[str],
                  progress: Callable[[str], Progress | None] | None = None,
                  load_model: Callable[[], TargetModel] | None = None) -> list[Engine]:
    """One engine per layer of `layers` (each checks its layer when it first needs the
    model), sharing what does not depend on the layer: the target model (`load_model`,
    by default `model_loader(settings)`), the generator and the cache, so a concept's
    images render once for all layers (and `tools.engine.prepare_layers` forwards them once).
    `progress(layer)`: that engine's progress callback. The engines share a generator: use
    them one at a time."""
    load_model = load_model or model_loader(settings)
    generator = make_generator(settings.generator)
    return [build_engine(settings.model_copy(update={"layer": layer}), progress(layer) if progress else None,
                         loader=load_model, generator=generator) for layer in layers]


@lru_cache(maxsize=None)
def _warn_drawings_for_photos(control: str, kind: str) -> None:
    """Once per process: photos scored against procedural drawings separate on style alone."""
    log.warning("control %s is procedural drawings, but the %s generator draws photos: units that tell photos from "
                "drawings will look selective. Prefer control = \"auto\" (natural photos) or dir:PATH.", control, kind)
