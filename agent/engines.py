"""The engine of a configuration: target model, generator, control set and caches.

Kept apart from the graph modules so that `line score` starts without LangGraph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.config import GeneratorConfig, Settings
from tools.cache import DiskCache
from tools.control import load_control_set
from tools.engine import Engine, Progress
from tools.fingerprint import model_fingerprint
from tools.generators.base import ImageGenerator

if TYPE_CHECKING:
    from tools.models import TargetModel


def make_generator(config: GeneratorConfig) -> ImageGenerator:
    if config.kind == "procedural":
        from tools.generators.procedural import ProceduralGenerator

        return ProceduralGenerator(size=config.size or 224)
    from tools.generators.diffusion import DiffusersGenerator

    return DiffusersGenerator(model=config.model, steps=config.steps, guidance_scale=config.guidance_scale,
                              size=config.size or 512, batch_size=config.batch_size)


def build_engine(settings: Settings, progress: Progress | None = None, trust_code: bool = True,
                 model: TargetModel | None = None) -> Engine:
    """The engine of `settings`; its target model loads on first use (torch with it), or is
    `model`, already loaded (a module in memory: `tools.models.live_target_model`).

    With `trust_code=False` (settings read from a run folder nobody vouched for) a model
    spec that names code (`package.module:factory`, `file.py:factory`) is never imported:
    needing the model raises `UntrustedCode` instead."""

    def load_model():
        if model is not None:
            return model
        from tools.models import load_target_model

        return load_target_model(settings.model, settings.device, trust_code=trust_code)

    cache = DiskCache(settings.cache_dir)
    return Engine(
        settings.model, load_model, settings.layer,
        make_generator(settings.generator),
        load_control_set(settings.control, cache), cache,
        images_per_concept=settings.loop.images_per_concept, control_mode=settings.loop.control_mode,
        progress=progress, fingerprint=model_fingerprint(settings.model),
    )
