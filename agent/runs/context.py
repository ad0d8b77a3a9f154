"""The runtime context of a labelling run, built from its settings: the engine's concept
rules, the LLM client, the criterion and the layer-wide sweep's concepts."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.config import LoopConfig, Settings
from agent.llm import make_chat_model
from agent.loop.context import LineContext
from tools.concepts import ConceptRules, concept_problem
from tools.engine import Engine
from tools.errors import LineError
from tools.generators.base import Atom, ImageGenerator, sweep_vocabulary
from tools.text import default_embedder

log = logging.getLogger(__name__)


def build_context(settings: Settings, engine: Engine, chat=None) -> LineContext:
    """The runtime context of a run; `chat` overrides the configured provider (tests, evals).
    Where the LLM does not propose (`LoopConfig.llm_proposes`: by default not the embedded
    model) the loop has no LLM call to spend and its search is the operators'."""
    embedder = default_embedder() if settings.loop.dedup else None
    loop = settings.loop
    if not loop.llm_proposes(settings.llm, chat_given=chat is not None):
        loop, chat = loop.model_copy(update={"max_llm_calls": 0}), None
    elif chat is None:
        chat = make_chat_model(settings.llm)
    rules = ConceptRules(engine.generator, embedder, loop.dedup_threshold, dedup=loop.dedup)
    return LineContext(engine=engine, rules=rules,
                       loop=loop, chat=chat, temperature=settings.llm.temperature, llm_retries=settings.llm.retries,
                       criterion=loop.judge(),
                       atoms=sweep_atoms(loop, engine.generator) if loop.sweep else [])


def labelling_context(settings: Settings, engine: Engine, chat=None) -> LineContext | None:
    """The runtime context to label here (`chat` overrides the configured LLM), built before
    a run exists so that a failed start leaves nothing behind; None on Ray, whose workers
    build their own from the settings."""
    if settings.cluster.backend == "local":
        return build_context(settings, engine, chat)
    if chat is not None:
        raise LineError("a chat model in memory cannot travel to Ray workers.",
                        "Configure the LLM in [llm] (each worker builds its own), or set cluster.backend = \"local\".")
    if engine.model_name.startswith("live:"):
        raise LineError("a torch module in memory cannot travel to Ray workers.",
                        "Give the model as a spec they can load (package.module:factory, timm:NAME...), or set "
                        "cluster.backend = \"local\".")
    _check_ray_address(settings.cluster.address)
    return None


def _check_ray_address(address: str, seconds: float = 5.0) -> None:
    """A LineError, before any run exists, where a ray://HOST:PORT address does not answer
    (Ray's own client would try for half a minute, after the run folder is made)."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("ray://"):
        return
    try:
        parts = urlsplit(address)
        port = parts.port or 10001
        with socket.create_connection((parts.hostname or "", port), timeout=seconds):
            return
    except (OSError, ValueError) as error:
        raise LineError(f"cannot reach the Ray cluster at cluster.address = {address!r} "
                        f"({error.__class__.__name__}: {error}).",
                        'Start one (ray start --head), give its ray://HOST:PORT, or set cluster.address = "local".') from error


def sweep_atoms(loop: LoopConfig, generator: ImageGenerator) -> list[Atom]:
    """The layer-wide sweep's concepts: `loop.sweep_concepts` (a file, one a line), else the
    generator's atoms and its whole sweep vocabulary (tools.generators.base.sweep_vocabulary),
    one concept per scene."""
    if not loop.sweep_concepts:
        atoms = generator.atoms()
        scenes = {generator.interpret(a.concept).canonical or a.concept for a in atoms}
        for concept in sweep_vocabulary(generator):
            scene = generator.interpret(concept).canonical or concept
            if scene not in scenes:
                scenes.add(scene)
                atoms.append(Atom("vocabulary", concept, concept))
        return atoms
    path = Path(loop.sweep_concepts).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LineError(f"cannot read loop.sweep_concepts {str(path)!r} ({error.__class__.__name__}).",
                        "Point it at a UTF-8 text file with one concept a line.") from error
    concepts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    problems = {c: concept_problem(c, generator) for c in dict.fromkeys(concepts)}
    refused = [c for c, problem in problems.items() if problem is not None]
    if refused:
        log.warning("loop.sweep_concepts: %d of %d concepts skipped (%s%s).", len(refused), len(problems),
                    problems[refused[0]], ", ..." if len(refused) > 1 else "")
    return [Atom("concepts", c, c) for c, problem in problems.items() if problem is None]
