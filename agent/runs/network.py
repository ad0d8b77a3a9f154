"""Several layers of one model labelled as one run: a network run.

`runs/<id>/run.json` says `"kind": "network"` and names the layers in the model's order.
Each layer is an ordinary run of one layer (agent.runs.run.Run) in `runs/<id>/layers/<layer>/`,
with its own checkpoints, unit table and writer lock, and the id `<id>--<layer>` (unique in
a store that several runs share). `NetworkRun.label` labels the layers one after the other,
each from where its checkpoints stop, here or on Ray (agent.runs.backends): a resumed
network run repeats no scored step. The run's own `history.json`
(`{"run", "settings", "layers": {layer: {"units": ...}}}`) and `labels.csv` gather the
layers' and are rewritten whenever a layer's are. The layers' engines share one target
model and one generator (`layer_engines`), each loaded once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from agent.config import Settings
from agent.loop.context import LineContext
from agent.loop.state import NeuronState
from agent.runs.backends import label
from agent.runs.context import labelling_context
from agent.runs.engine_factory import build_engines, control_spec, model_loader
from agent.runs.labels_csv import label_rows, rows_csv
from agent.runs.run import (NETWORK, RUN_ID, Reviewer, Run, find_run, held_writer, make_run_folder, mend_run_file,
                            new_run_folder, new_run_id, read_json_file, read_run_file, resume_settings, run_kind, run_settings,
                            runs_dir_flag, units_text, write_run_file)
from agent.runs.store import open_store
from tools.engine import Engine, parse_units, prepare_layers
from tools.errors import LineError
from tools.layer_select import model_layers
from tools.scoring import strict_json
from tools.verdict import natural_sample

if TYPE_CHECKING:
    from tools.models import TargetModel

log = logging.getLogger(__name__)

LAYERS_DIR = "layers"
LayerUpdate = Callable[[str, int, str, NeuronState], None]  # (layer, unit, node, state)
Units = str | Callable[[Engine], list[int]]  # 'all', '0-9'... for every layer, or each layer's from its engine


class NetworkRun:
    """One labelling run over some units of several layers: a run of one layer per layer."""

    def __init__(self, folder: Path, settings: Settings, layers: list[str], children: dict[str, Run]):
        self.folder, self.settings, self.layers, self.children = folder, settings, layers, children
        self.id = folder.name
        self.flag = runs_dir_flag(folder.parent)
        self.store = open_store(settings).run(self.id, folder)  # the id in a shared store, and the writer lock
        self._lock = threading.Lock()
        self._writer = None
        self._parts: dict[str, tuple[str, list[list[str]]]] = {}  # layer -> its units as JSON, its labels.csv rows
        for layer, child in children.items():
            child.flag = self.flag
            child.on_export = partial(self._layer_exported, layer)

    @property
    def units(self) -> dict[str, list[int]]:
        return {layer: self.children[layer].units for layer in self.layers}

    # --- creating and opening ------------------------------------------------------------
    @classmethod
    def create(cls, settings: Settings, units: Mapping[str, list[int]], run_id: str | None = None) -> "NetworkRun":
        """A new network run over the layers of `units` (layer -> its units), in that order.
        Its settings keep the first layer as `layer`; each layer's run has its own."""
        layers = list(units)
        if not layers:
            raise LineError("a network run needs at least one layer.", "Name layers with --layers, e.g. '_blocks.*'.")
        settings = settings.model_copy(update={"control": control_spec(settings), "layer": layers[0]})
        folder = new_run_folder(settings, run_id, new_run_id(settings, f"{len(layers)}-layers"))
        for layer in layers:
            if not RUN_ID.fullmatch(layer_id(folder.name, layer)):
                raise LineError(f"run id {folder.name!r} with layer {layer!r} makes a layer's run id of "
                                f"{len(layer_id(folder.name, layer))} characters (at most 200).", "Choose a shorter --run-id.")
        created = make_run_folder(folder)
        store = open_store(settings).run(folder.name, folder)
        made: list[Run] = []
        registered = False
        try:
            store.register()
            registered = True
            for layer in layers:
                made.append(Run.create(layer_settings(settings, layer), list(units[layer]), layer_id(folder.name, layer),
                                       folder=layer_folder(folder, layer)))
            write_run_file(folder / "run.json", json.dumps(
                {"id": folder.name, "kind": NETWORK, "created": datetime.now().isoformat(timespec="seconds"),
                 "settings": settings.public(), "layers": layers}, indent=2).encode())
        except BaseException:  # a failed start leaves no run behind (and no id taken in a shared store)
            for child in made:
                child.store.unregister()
            if registered:
                store.unregister()
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(folder, settings, layers, {child.settings.layer: child for child in made})

    @classmethod
    def open(cls, folder: Path) -> "NetworkRun":
        """The network run in `folder` (its run.json says so: see `open_run`)."""
        path = folder / "run.json"
        meta = read_json_file(path)
        layers = meta.get("layers") if isinstance(meta, dict) else None
        if not (isinstance(meta, dict) and isinstance(meta.get("settings"), dict) and isinstance(layers, list) and layers
                and all(isinstance(layer, str) and layer for layer in layers) and len(set(layers)) == len(layers)):
            raise LineError(f"run file {path} is damaged: a network run names its settings and its layers (a list of "
                            "names).", "Restore it from a backup, or start a new run.")
        return cls(folder, run_settings(meta, path), layers, {layer: open_layer(folder, layer) for layer in layers})

    def discard_if_unstarted(self) -> bool:
        """Remove the run where no unit of any layer has started (a failed start); whether it did."""
        if any(child.store.units() for child in self.children.values()):
            return False
        for child in self.children.values():
            child.store.unregister()
        self.store.unregister()
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def mend(self, settings: Settings) -> list[str]:
        """Keep `settings` (from `resume_settings`) as the run's own and its layers'; the keys that changed."""
        changed = mend_run_file(self.folder, self.settings, settings)
        self.settings = settings
        for layer, child in self.children.items():
            child.mend(layer_settings(settings, layer))
        return changed

    def resume_settings(self, changes: dict[str, Any], units: Mapping[str, list[int]] | None = None,
                        layers: Sequence[str] | None = None) -> Settings:
        """The run's settings with `changes` for `--resume` (agent.runs.run.resume_settings);
        other `layers` or `units` (layer -> units) than the run's are refused too."""
        if layers is not None and list(layers) != self.layers:
            raise LineError(f"--resume {self.id} cannot change what the run scores: layers ({layers_text(self.layers)} "
                            f"-> {layers_text(list(layers))}).", "Leave --layers out to resume the run's own, or start a new run.")
        changed = [layer for layer in self.layers if units is not None and list(units.get(layer, [])) != self.children[layer].units]
        if changed:
            layer = changed[0]
            raise LineError(f"--resume {self.id} cannot change what the run scores: units of {layer} "
                            f"({units_text(self.children[layer].units)} -> {units_text(list(units[layer]))}).",
                            "Leave --units out to resume the run's own, or start a new run.")
        return resume_settings(self, changes)  # the same keys may change as for a run of one layer

    # --- the layers ------------------------------------------------------------------------
    def layer(self, layer: str | None) -> Run:
        """The run of `layer` (None: the only one); a LineError naming the layers otherwise."""
        if layer is None and len(self.layers) == 1:
            return self.children[self.layers[0]]
        if layer is None:
            raise LineError(f"run {self.id} labels {len(self.layers)} layers ({layers_text(self.layers)}): name one "
                            "with --layer.", f"E.g. --layer {self.layers[0]}.")
        if layer not in self.children:
            raise LineError(f"layer {layer!r} is not in run {self.id} (layers: {layers_text(self.layers)}).",
                            "Pass one of its layers with --layer.")
        return self.children[layer]

    def unfinished(self) -> dict[str, list[int]]:
        return {layer: self.children[layer].unfinished() for layer in self.layers}

    def waiting(self) -> dict[str, list[int]]:
        """The units paused for a person's review, by layer (layers with none left out)."""
        return {layer: units for layer in self.layers if (units := self.children[layer].waiting())}

    def states(self) -> dict[str, dict[int, NeuronState]]:
        return {layer: self.children[layer].states() for layer in self.layers}

    # --- labelling ---------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator["NetworkRun"]:
        """Hold the network run's writer lock for the block (each layer's run takes its own as
        it labels); nested blocks share it."""
        with held_writer(self):
            yield self

    def label(self, contexts: Mapping[str, LineContext | None], on_update: LayerUpdate | None = None,
              reviewer: Reviewer | None = None) -> dict[str, dict[int, NeuronState]]:
        """Label every layer's units, layer after layer, each where its checkpoints stop
        (`contexts`: layer -> its context from `labelling_context`, None on Ray). Ctrl-C stops
        as in `Run.label`; every finished node is kept and the history files are written."""
        results: dict[str, dict[int, NeuronState]] = {}
        with self.writer(), _ray_session(self.settings):
            try:
                self.record_shared(prepare_together([contexts[layer] for layer in self.layers
                                                     if contexts.get(layer) is not None and self.children[layer].unfinished()]))
                for layer in self.layers:
                    child = self.children[layer]
                    if not child.unfinished():  # done: nothing to load or prepare
                        results[layer] = child.states()
                        continue
                    update = None if on_update is None else partial(on_update, layer)
                    results[layer] = label(child, contexts[layer], update, reviewer)
            finally:
                if self.folder.exists():
                    self.export()
        return results

    def record_shared(self, cost: dict | None) -> None:
        """Keep the shared forwards' one-off cost in the run's `sweep.json` (a resume that
        found everything cached leaves the first one's)."""
        path = self.folder / "sweep.json"
        if cost is not None and (cost["images_forwarded"] or not path.exists()):
            write_run_file(path, strict_json(cost).encode())

    # --- the run's history.json and labels.csv --------------------------------------------------
    def export(self) -> Path:
        """Write the run's `history.json` and `labels.csv` from its layers' states."""
        with self._lock:
            return self._write_files()

    def _layer_exported(self, layer: str, states: dict[int, NeuronState]) -> None:
        """A layer wrote its files: the run's are written again, with that layer's new states."""
        with self._lock:
            self._parts[layer] = self._part(layer, states)
            self._write_files()

    def _part(self, layer: str, states: dict[int, NeuronState]) -> tuple[str, list[list[str]]]:
        """A layer's units as JSON and its labels.csv rows, kept until the layer changes (only
        the layer that changed is joined again, and only its units that changed serialised:
        `Run.units_json`)."""
        units = [u for u in self.children[layer].units if u in states]
        return self.children[layer].units_json(states), label_rows(layer, [states[u] for u in units])

    def _write_files(self) -> Path:
        """history.json from each layer's units as JSON (written as text: a whole network's
        histories are not parsed and dumped again for every unit that finishes), and labels.csv."""
        for layer in self.layers:
            if layer not in self._parts:
                self._parts[layer] = self._part(layer, self.children[layer].states())
        layers = ",\n".join(f'{json.dumps(layer)}: {{"units": {self._parts[layer][0]}}}' for layer in self.layers)
        path = self.folder / "history.json"
        write_run_file(path, (f'{{"run": {json.dumps(self.id)},\n"settings": {strict_json(self.settings.public())},\n'
                              f'"layers": {{\n{layers}\n}}}}\n').encode())
        write_run_file(self.folder / "labels.csv", rows_csv(row for layer in self.layers for row in self._parts[layer][1]))
        return path


# --- a network run's layers --------------------------------------------------------------------
def layer_settings(settings: Settings, layer: str) -> Settings:
    return settings.model_copy(update={"layer": layer})


def layer_name(layer: str) -> str:
    """The layer's folder name (and its run id's tail): the layer's own name where it is safe
    in a path and a run id, else a safe form with a digest of the name (no two layers meet)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", layer).strip(".-") or "layer"
    return layer if safe == layer else f"{safe}-{hashlib.sha256(layer.encode()).hexdigest()[:8]}"


def layer_id(run_id: str, layer: str) -> str:
    return f"{run_id}--{layer_name(layer)}"


def layer_folder(folder: Path, layer: str) -> Path:
    """`folder/layers/<layer>`, checked to stay inside `folder` (a run folder is data: a link
    there must not lead elsewhere)."""
    path = folder / LAYERS_DIR / layer_name(layer)
    if path.exists() and not path.resolve().is_relative_to(folder.resolve()):
        raise LineError(f"the folder of layer {layer!r} ({path}) leads outside its run {folder}.",
                        "Remove the link, or restore the run from a backup.")
    return path


def open_layer(folder: Path, layer: str) -> Run:
    """The run of `layer` in the network run in `folder`."""
    path = layer_folder(folder, layer) / "run.json"
    if not path.is_file():
        raise LineError(f"network run {folder.name} is damaged: layer {layer!r} has no run file ({path}).",
                        "Restore it from a backup, or start a new run.")
    meta = read_run_file(path)
    settings = run_settings(meta, path)
    if settings.layer != layer:
        raise LineError(f"run file {path} is damaged: it labels layer {settings.layer!r}, not {layer!r}.",
                        "Restore it from a backup, or start a new run.")
    return Run(path.parent, settings, meta["units"], layer_id(folder.name, layer))


def open_run(run_id: str, runs_dir: str | Path = "runs") -> Run | NetworkRun:
    """The run `run_id` under `runs_dir`: a network run, or a run of one layer (`Run.open`)."""
    folder = find_run(run_id, runs_dir)
    return NetworkRun.open(folder) if run_kind(folder) == NETWORK else Run.open(run_id, runs_dir)


def layer_run(run: Run | NetworkRun, layer: str | None) -> Run:
    """The run of one layer: `run` itself (`layer`, when given, must be its own), or the
    network run's `layer` (which may be left out where it has one layer)."""
    if isinstance(run, NetworkRun):
        return run.layer(layer)
    if layer is not None and layer != run.settings.layer:
        raise LineError(f"run {run.id} labels layer {run.settings.layer}, not {layer!r}.",
                        "Leave --layer out, or pass the run's own layer.")
    return run


def layers_text(layers: list[str]) -> str:
    return ", ".join(layers) if len(layers) <= 6 else f"{', '.join(layers[:3])}, ..., {layers[-1]} ({len(layers)})"


# --- what labelling a network needs -------------------------------------------------------------
def layer_engines(settings: Settings, layers: Sequence[str], progress=None, trust_code: bool = True,
                  model: TargetModel | None = None, loader: Callable[[], TargetModel] | None = None) -> dict[str, Engine]:
    """An engine per layer, sharing one target model (loaded once, on first use; `model`
    when already loaded) and one generator."""
    engines = build_engines(settings, layers, (lambda layer: progress) if progress else None,
                            loader or model_loader(settings, trust_code, model))
    return dict(zip(layers, engines))


def prepare_together(contexts: Sequence[LineContext]) -> dict | None:
    """What the layers about to be labelled need first, in one forward a batch for all of
    them (tools.engine.prepare_layers): the control set, the vocabulary sweep and the
    verdict's natural photos. Each layer's own preparation then finds its activations
    cached. None with fewer than two."""
    if len(contexts) < 2:
        return None
    start = time.perf_counter()
    concepts = list(dict.fromkeys(a.concept for c in contexts for a in c.atoms))
    engines = [c.engine for c in contexts]
    photos = natural_sample(engines[0])
    cost = prepare_layers(engines, concepts, images=[photos] if photos else ())
    return {"layers": len(contexts), "concepts": len(concepts), **cost, "seconds": round(time.perf_counter() - start, 2)}


def start_network(settings: Settings, layers: str | Sequence[str], units: Units, run_id: str | None = None, *,
                  chat=None, progress=None, model: TargetModel | None = None,
                  ) -> tuple[NetworkRun, dict[str, LineContext | None], dict[str, Engine]]:
    """A new network run over `layers` of the model with `units` of each, with its contexts
    and engines. Everything is checked and built before the run exists: a failed start
    leaves nothing behind."""
    loader = model_loader(settings, model=model)
    chosen = model_layers(layers, loader(), settings.model)
    engines = layer_engines(settings, chosen, progress, loader=loader)
    picked = {layer: units(engine) if callable(units) else parse_units(units, engine.units, layer)
              for layer, engine in engines.items()}
    if settings.cluster.backend == "local":  # on Ray the workers compute the control sets (their init checks)
        prepare_layers(list(engines.values()), [])  # the control set: one forward a batch for all layers
        for layer, engine in engines.items():
            engine.check_finite(picked[layer])
    contexts = {layer: labelling_context(layer_settings(settings, layer), engine, chat) for layer, engine in engines.items()}
    return NetworkRun.create(settings, picked, run_id), contexts, engines


def network_contexts(run: NetworkRun, chat=None, progress=None, model: TargetModel | None = None,
                     trust_code: bool = True) -> tuple[dict[str, LineContext | None], dict[str, Engine]]:
    """The engines of `run`'s layers, and the contexts to label (or resume) those with units
    left (a finished layer needs no LLM), with the run's settings."""
    engines = layer_engines(run.settings, run.layers, progress, trust_code, model)
    return {layer: labelling_context(run.children[layer].settings, engines[layer], chat) for layer in run.layers
            if run.children[layer].unfinished()}, engines


@contextmanager
def _ray_session(settings: Settings) -> Iterator[None]:
    """One Ray connection for all the layers (each layer's labelling joins the cluster
    itself where this process has not)."""
    if settings.cluster.backend != "ray":
        yield
        return
    from agent.runs.ray_backend import connect

    try:
        started = connect(settings.cluster)
    except ImportError:  # the layer's labelling says Ray is missing, as for a run of one layer
        started = False
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()
