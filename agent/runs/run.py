"""A run's life: create, open, label its units here, resume, export.

A run lives in `runs/<id>/`: `run.json` (settings and units), `history.json` (every
neuron's history as JSON, rewritten as units finish) and `sweep.json` (the layer sweep's
cost). Its store (agent.runs.store, `[store] url`) keeps one LangGraph thread per unit, written
after every node, the unit table and the writer lock: by default `checkpoints.sqlite` and
`writer.lock` in the folder. `Run.label` labels the units here, in threads (`concurrency`);
agent.runs.backends sends them to Ray workers instead where the settings say so.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from langgraph.types import Command

from agent.config import Settings, load_settings
from agent.loop.context import LineContext
from agent.loop.graph import build_label_graph, neuron_state, thread_config
from agent.loop.state import NeuronState
from agent.runs.engine_factory import control_spec
from agent.runs.labels_csv import labels_csv
from agent.runs.store import CHECKPOINTS, DONE, RUNNING, WAITING, open_store
from tools.cache import atomic_write
from tools.errors import RUNS_DIR, LineError, os_error
from tools.scoring import strict_json

log = logging.getLogger(__name__)

Update = Callable[[int, str, NeuronState | dict], None]
Reviewer = Callable[[dict], str]
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
NETWORK = "network"  # run.json's "kind" of a run over several layers (agent.runs.network)
# history.json is written at most this often while units finish (and always at the end and on
# an interrupt): it holds every unit, so writing it after each one made a layer's run
# quadratic in its units (1,280 for EfficientNet-Lite0's head). Checkpoints are per step.
EXPORT_EVERY = 30.0
# Settings a resumed run may change (dotted for sections; "llm" for the whole section): where
# things run and are kept, the LLM (it only proposes), budgets. None changes what is scored.
MAY_CHANGE_ON_RESUME = frozenset({
    "runs_dir", "cache_dir", "concurrency", "device", "generator.device", "generator.dtype", "generator.batch_size",
    "cluster", "llm", "loop.max_iterations", "loop.max_images", "loop.max_llm_calls", "loop.llm_proposals", "loop.max_seconds",
})


def new_run_id(settings: Settings, what: str | None = None) -> str:
    """A default run id: the time, the model and `what` it labels (the layer by default)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{stamp}-{settings.model}-{settings.layer if what is None else what}")


def runs_dir_flag(runs_dir: str | Path) -> str:
    """` --runs-dir DIR` for a command line a person copies, or '' for the default folder."""
    return "" if Path(runs_dir) == Path("runs") else f" --runs-dir {shlex.quote(str(runs_dir))}"


class Run:
    """One labelling run over some units of one layer."""

    def __init__(self, folder: Path, settings: Settings, units: list[int], run_id: str | None = None):
        self.folder, self.settings, self.units = folder, settings, units
        # The folder's name, but for a layer of a network run: its id in a store several runs share.
        self.id = run_id or folder.name
        self.flag = runs_dir_flag(folder.parent)  # ` --runs-dir DIR` for the commands it suggests
        self.store = open_store(settings).run(self.id, folder)
        # Called with the states after every export (a network run gathers its layers' files).
        self.on_export: Callable[[dict[int, NeuronState]], None] | None = None
        self._lock = threading.Lock()
        self._json: dict[int, tuple[NeuronState, str]] = {}  # unit -> (its state, as JSON): `unit_json`
        self._writer = None
        self._stop = threading.Event()

    # --- creating and opening ------------------------------------------------------------
    @classmethod
    def create(cls, settings: Settings, units: list[int], run_id: str | None = None, *,
               folder: Path | None = None) -> "Run":
        """A new run folder; its settings are stored with the control set resolved (`auto`
        becomes the folder or procedural set it stands for here), so a resume elsewhere
        scores against the same images. `folder`: where a layer of a network run lives
        (agent.runs.network), `run_id` then its id in the store; else `runs_dir/<run_id>`."""
        settings = settings.model_copy(update={"control": control_spec(settings)})
        if not units:
            raise LineError("a run needs at least one unit.", "Pass the units to label, e.g. 0-9 or all.")
        folder = new_run_folder(settings, run_id, new_run_id(settings)) if folder is None else folder
        created = make_run_folder(folder)
        run = cls(folder, settings, units, run_id)
        try:
            run.store.register()
            write_run_file(folder / "run.json", json.dumps(
                {"id": run.id, "created": datetime.now().isoformat(timespec="seconds"),
                 "settings": settings.public(), "units": units}, indent=2).encode())
        except BaseException:  # a failed start leaves no run behind
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return run

    @classmethod
    def open(cls, run_id: str, runs_dir: str | Path = "runs") -> "Run":
        meta_path = find_run(run_id, runs_dir) / "run.json"
        folder = meta_path.parent
        meta = read_run_file(meta_path)
        return cls(folder, run_settings(meta, meta_path), meta["units"])

    def discard_if_unstarted(self) -> bool:
        """Remove the run (its folder, its id in a shared store) where no unit has started:
        a start that failed (an unreachable cluster, say) leaves no run behind. Whether it did."""
        if self.store.units():
            return False
        self.store.unregister()
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def mend(self, settings: Settings) -> list[str]:
        """Keep `settings` (from `resume_settings`) as the run's own, in `run.json`, so a later
        plain `--resume` uses them too; returns the keys that changed (also logged there)."""
        changed = mend_run_file(self.folder, self.settings, settings)
        if changed:
            self.settings = settings
        return changed

    # --- the one writer -------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator["Run"]:
        """Hold the run's writer lock (its store's: agent.runs.lock, or a lease in Postgres) for
        the block; nested blocks share it."""
        with held_writer(self):
            yield self

    # --- labelling ------------------------------------------------------------------------
    def label(self, context: LineContext, on_update: Update | None = None,
              reviewer: Reviewer | None = None) -> dict[int, NeuronState]:
        """Label every unit here (skipping finished ones); resumes where checkpoints stop.

        Ctrl-C stops at once: with one unit at a time the units run in the calling thread,
        so the interrupt lands wherever it is (a node, rendering, an LLM call); with
        several, each stops after the node at hand. Finished nodes are checkpointed, and
        `history.json` is written before the interrupt goes on up."""
        with self.writer():
            self.check_checkpoints()
            self.record_sweep(prepare(context))
            with self.store.checkpointer() as checkpointer:
                graph = build_label_graph(checkpointer)
                known = self.states(graph)  # read once: each finished unit then updates it
                last = [time.monotonic()]

                def one(unit: int) -> NeuronState:
                    result = self.label_unit(graph, context, unit, on_update, reviewer)
                    with self._lock:
                        known[unit] = result
                        due = time.monotonic() - last[0] >= EXPORT_EVERY
                        if due:
                            last[0] = time.monotonic()
                    if due:
                        self.export(states=dict(known))
                    return result

                try:
                    if self.settings.concurrency == 1:
                        done = {unit: one(unit) for unit in self.units}
                    else:
                        done = self._label_side_by_side(one)
                except BaseException:
                    self.export(graph)
                    raise
                self.export(states=known)
                return done

    def check_checkpoints(self) -> None:
        """A LineError where the run's checkpoints are gone but its history.json holds units:
        labelling on would start them over and overwrite that history."""
        if not self.store.exists() and self._exported_states():
            raise LineError(f"run {self.id} has lost its checkpoints ({self.folder / CHECKPOINTS} is missing); its "
                            "history.json still holds the units it labelled.",
                            f"Read them with line history {self.id} --unit N{self.flag} or line report {self.id}{self.flag}; to label again, "
                            "start a new run (or restore the file from a backup and resume).")

    def _label_side_by_side(self, one: Callable[[int], NeuronState]) -> dict[int, NeuronState]:
        """Units in worker threads; on an error or Ctrl-C the others stop after their node."""
        self._stop.clear()
        pool = ThreadPoolExecutor(self.settings.concurrency)
        futures = [pool.submit(one, unit) for unit in self.units]
        try:
            return {unit: future.result() for unit, future in zip(self.units, futures)}
        except BaseException:
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def record_sweep(self, cost: dict | None) -> None:
        """Keep the sweep's one-off cost in `sweep.json` (a sweep that found everything in
        the bank leaves the cost recorded when it ran)."""
        path = self.folder / "sweep.json"
        if cost is None or (path.exists() and not cost["images_rendered"]):
            return
        write_run_file(path, strict_json(cost).encode())

    def thread_config(self, unit: int) -> dict:
        return thread_config(self.store.thread_id(unit), self.settings.loop)

    def label_unit(self, graph, context: LineContext, unit: int, on_update: Update | None = None,
                   reviewer: Reviewer | None = None) -> NeuronState:
        """Label one unit from where its checkpoints stop, keeping the unit table up to date."""
        config = self.thread_config(unit)
        snapshot = graph.get_state(config)
        inputs = None if snapshot.values else NeuronState(unit=unit)
        taken = False
        while True:
            # Finished: no task left. (`next` alone is not enough: after a kill, a node's
            # writes may be saved while the checkpoint that follows them is not.)
            if snapshot.values and not snapshot.tasks:
                return self._settled(unit, DONE, snapshot.values)
            if snapshot.interrupts and reviewer is None:
                return self._settled(unit, WAITING, snapshot.values)  # waits for a person; resumable later
            if not taken:
                self.store.mark(unit, RUNNING)
                taken = True
            if snapshot.interrupts:
                inputs = Command(resume=reviewer(snapshot.interrupts[0].value))
            # "updates" names the node that ran; "values" then brings the whole state, so
            # progress needs no extra read of the checkpoint.
            node = ""
            stream = graph.stream(inputs, config, context=context, stream_mode=["updates", "values"], durability="sync")
            for mode, chunk in stream:
                if mode == "updates":
                    node = next((name for name in chunk if name != "__interrupt__"), node)
                elif on_update and node and "__interrupt__" not in chunk:  # a pause for review: no new state
                    on_update(unit, node, neuron_state(chunk))
                if self._stop.is_set():  # another unit failed or was interrupted
                    stream.close()
                    return neuron_state(graph.get_state(config).values)
            snapshot = graph.get_state(config)
            inputs = None

    def _settled(self, unit: int, status: str, values) -> NeuronState:
        self.store.mark(unit, status)
        return neuron_state(values)

    def unfinished(self) -> list[int]:
        """The units the unit table does not record as finished, in the run's order."""
        table = self.store.units()
        return [unit for unit in self.units if unit not in table or table[unit].status != DONE]

    def waiting(self) -> list[int]:
        """The units paused for a person's review (`loop.review`), in the run's order."""
        table = self.store.units()
        return [unit for unit in self.units if unit in table and table[unit].status == WAITING]

    def states(self, graph=None) -> dict[int, NeuronState]:
        """The current state of every unit that has started. A run whose checkpoints are
        gone is read from its `history.json` (and nothing is created by reading)."""
        if graph is None and not self.store.exists():
            return self._exported_states()
        if graph is None:
            with self.store.checkpointer() as checkpointer:
                return self.states(build_label_graph(checkpointer))
        result = {}
        for unit in self.units:
            values = graph.get_state(self.thread_config(unit)).values
            # A unit whose input is saved but not applied yet (another thread is starting
            # it) shows only its reducers' defaults: it has not started.
            if values and "unit" in values:
                result[unit] = neuron_state(values)
        return result

    def _exported_states(self) -> dict[int, NeuronState]:
        """The states `history.json` holds (none where it is missing)."""
        try:
            units = json.loads((self.folder / "history.json").read_text(encoding="utf-8"))["units"]
            return {unit: neuron_state(units[str(unit)]) for unit in self.units if str(unit) in units}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as error:  # JSON, UTF-8 and validation errors are ValueErrors
            raise LineError(f"{self.folder / 'history.json'} is damaged ({str(error).splitlines()[0][:120]}), and "
                            f"the run's checkpoints are missing.", "Restore either from a backup.") from error

    def export(self, graph=None, states: dict[int, NeuronState] | None = None) -> Path:
        """Write `history.json`: every neuron's full history (`states`, or read from the store),
        and `labels.csv` beside it (agent.runs.labels_csv)."""
        with self._lock:
            states = self.states(graph) if states is None else states
            started = [states[u] for u in self.units if u in states]
            path = self.folder / "history.json"
            write_run_file(path, (f'{{"run": {json.dumps(self.id)},\n"settings": {strict_json(self.settings.public())},\n'
                                  f'"units": {self.units_json(states)}}}\n').encode())
            write_run_file(self.folder / "labels.csv", labels_csv(self.settings.layer, started))
            if self.on_export is not None:
                self.on_export(states)
            return path

    def units_json(self, states: dict[int, NeuronState]) -> str:
        """The units of `states` as one JSON object, unit -> state. Each unit's text is kept
        while its state is the same object (a finished unit's never changes), so an export
        serialises only the units that changed: serialising all of them every time made a
        1,280-unit layer's run spend more time writing history.json than labelling."""
        parts = []
        for unit in self.units:
            if unit not in states:
                continue
            kept = self._json.get(unit)
            if kept is None or kept[0] is not states[unit]:
                kept = self._json[unit] = (states[unit], strict_json(states[unit].model_dump(mode="json")))
            parts.append(f"{json.dumps(str(unit))}: {kept[1]}")
        return "{\n" + ",\n".join(parts) + "\n}"


def find_run(run_id: str, runs_dir: str | Path = "runs") -> Path:
    """The folder of run `run_id` under `runs_dir` (or a run's folder given as a path), or a
    LineError naming the latest runs."""
    if not str(run_id).strip() or not str(runs_dir).strip():
        empty = "the run id" if not str(run_id).strip() else "runs_dir"
        raise LineError(f"{empty} is empty.", "Name the run (see the folders under runs_dir), and leave --runs-dir "
                                              "out for the default (runs).")
    folder = Path(runs_dir) / run_id  # else a run's folder given as a path (a same-named folder here is no run)
    folder = folder if (folder / "run.json").is_file() or not (Path(run_id) / "run.json").is_file() else Path(run_id)
    if not (folder / "run.json").is_file():
        runs = sorted((p for p in Path(runs_dir).glob("*") if (p / "run.json").is_file()),
                      key=lambda p: (p / "run.json").stat().st_mtime)
        latest = ", ".join(p.name for p in runs[-5:])
        hint = (f"Known runs: {latest}." if 0 < len(runs) <= 5 else
                f"Known runs ({len(runs)}), the latest: {latest}." if runs else f"No runs in {runs_dir}/ yet.")
        raise LineError(f"run {run_id!r} does not exist.", hint)
    return folder


def new_run_folder(settings: Settings, run_id: str | None, default: str) -> Path:
    """Where a new run goes: `runs_dir/<run_id>`, or `runs_dir/<default>` (`-2`, `-3`... when
    taken); a LineError for a bad id, a run that exists, or a runs_dir that is a file."""
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise LineError(f"bad run id {run_id!r}: a run id names a folder inside runs_dir.",
                        "Use letters, digits, '.', '_' and '-', starting with a letter or digit, e.g. --run-id demo-1.")
    stem = run_id or default
    folder = Path(settings.runs_dir) / stem
    if folder.parent.exists() and not folder.parent.is_dir():
        raise LineError(f"runs_dir {str(folder.parent)!r} is a file, not a folder.",
                        "Move the file away, or point --runs-dir (runs_dir) at a folder.")
    for n in range(2, 1000):  # two runs started within one second: the second one's default id gets -2
        if run_id is not None or not folder.exists():
            break
        folder = folder.with_name(f"{stem}-{n}")
    if (folder / "run.json").exists():
        raise LineError(f"run {folder.name!r} exists already.",
                        f"Resume it with line label --resume {folder.name}{runs_dir_flag(folder.parent)}, "
                        "or choose another --run-id.")
    return folder


def make_run_folder(folder: Path) -> bool:
    """Make a new run's folder; whether it was not there before (a failed start removes it)."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error, RUNS_DIR) from error
    return created


def run_settings(meta: dict, path: Path) -> Settings:
    """The settings a run file holds, loaded and checked (a LineError naming the file)."""
    try:
        return load_settings(**meta["settings"])
    except LineError as error:
        raise LineError(f"run file {path} is damaged: its settings do not load ({error.problem})",
                        "Mend them by hand, or start a new run.") from error


def mend_run_file(folder: Path, old: Settings, new: Settings) -> list[str]:
    """Store `new` settings in the run file of `folder` in place of `old`, logging the keys
    that changed (returned) in its "mended" list."""
    changed = [key for key, _, _ in _differences(old.model_dump(), new.model_dump())]
    if changed:
        meta = json.loads((folder / "run.json").read_text())
        meta["settings"] = new.public()
        meta.setdefault("mended", []).append({"at": datetime.now().isoformat(timespec="seconds"), "keys": changed})
        write_run_file(folder / "run.json", json.dumps(meta, indent=2).encode())
    return changed


@contextmanager
def held_writer(owner) -> Iterator[None]:
    """Hold `owner`'s writer lock (`owner.store.lock()`, kept in `owner._writer`) for the
    block; a nested block shares the lock its outer block holds."""
    if owner._writer is not None:
        yield
        return
    lock = owner.store.lock().acquire()
    if lock.note:
        log.warning(lock.note)
    owner._writer = lock
    try:
        yield
    finally:
        owner._writer = None
        lock.release()


def write_run_file(path: Path, data: bytes) -> None:
    """A run file written whole, or a LineError naming it (a full disk, a read-only folder)."""
    try:
        atomic_write(path, data)
    except OSError as error:
        raise os_error(error, RUNS_DIR) from error


def read_json_file(path: Path):
    """A run file's JSON, or a LineError naming the file (unreadable, not JSON in UTF-8)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise LineError(f"cannot read run file {path} ({error.strerror}).", "Check the file and its permissions.") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LineError(f"run file {path} is damaged: not JSON in UTF-8 ({error}).",
                        "Restore it from a backup, or start a new run.") from error


def read_run_file(path: Path) -> dict:
    """A run's `run.json`, checked: an object with its settings (an object) and units (a
    list of unit numbers); a LineError naming the file and what is wrong otherwise."""
    meta = read_json_file(path)
    if isinstance(meta, dict) and meta.get("kind") == NETWORK:  # opened here by a door that knows one layer only
        raise LineError(f"run {path.parent.name} labels several layers (a network run), not one.",
                        f"Name the layer where the command takes --layer (line history {path.parent.name} --layer L "
                        "--unit N), or open it with line_agent.open_run.")
    problem = ("it is not a JSON object" if not isinstance(meta, dict)
               else "it lacks settings (an object)" if not isinstance(meta.get("settings"), dict)
               else "it lacks units (a list of unit numbers)" if not (
                    isinstance(meta.get("units"), list) and all(type(u) is int and u >= 0 for u in meta["units"]))
               else "")
    if problem:
        raise LineError(f"run file {path} is damaged: {problem}.", "Restore it from a backup, or start a new run.")
    return meta


def prepare(context: LineContext) -> dict | None:
    """What every unit of the layer needs first: the control set's activations, and the
    attribute sweep, scored once for the layer (free when it is in the bank). Returns the
    sweep's one-off cost, None without a sweep."""
    context.engine.control_activations()
    if not context.atoms:
        return None
    start = time.perf_counter()
    rendered = context.engine.sweep([a.concept for a in context.atoms])
    return {"concepts": len(context.atoms), "images_rendered": rendered,
            "seconds": round(time.perf_counter() - start, 2), "layer_units": context.engine.units}


def resume_settings(run: Run, changes: dict[str, Any], units: list[int] | None = None) -> Settings:
    """`run`'s settings with `changes` applied (settings keys to values, from flags or a config
    file) for `--resume`: the device, the LLM and budgets may be mended. A change that would
    alter what the run scored (the model, the layer, the generator, the control set...) is
    refused with a LineError naming the key: only the keys in `MAY_CHANGE_ON_RESUME` may
    differ from the run's, and `units` (when given) must be the run's."""
    stored = run.settings.model_dump()
    settings = load_settings(**deep_merged(stored, changes))
    settings = settings.model_copy(update={"control": control_spec(settings)})
    refused = [f"{key} ({old!r} -> {new!r})" for key, old, new in _differences(stored, settings.model_dump())
               if not _may_change(key)]
    if units is not None and units != run.units:
        refused.insert(0, f"units ({units_text(run.units)} -> {units_text(units)})")
    if refused:
        raise LineError(f"--resume {run.id} cannot change what the run scores: {'; '.join(refused)}.",
                        "Leave those settings out to resume with the run's own, or start a new run. A resume may "
                        "change: " + ", ".join(sorted(MAY_CHANGE_ON_RESUME)) + ".")
    return settings


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs."""
    found = []
    for key in new:
        name = f"{prefix}{key}"
        if isinstance(new[key], dict) and isinstance(old.get(key), dict):
            found += _differences(old[key], new[key], f"{name}.")
        elif new[key] != old.get(key):
            found.append((name, old.get(key), new[key]))
    return found


def _may_change(key: str) -> bool:
    return key in MAY_CHANGE_ON_RESUME or key.split(".")[0] in MAY_CHANGE_ON_RESUME


def deep_merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` on top, sections merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = deep_merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def run_kind(folder: Path) -> str:
    """What the run in `folder` labels: "network" (several layers), else "layer"."""
    try:
        meta = json.loads((folder / "run.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # read_run_file says what is wrong when the run is opened
        return "layer"
    return NETWORK if isinstance(meta, dict) and meta.get("kind") == NETWORK else "layer"


def units_text(units: list[int]) -> str:
    return ", ".join(map(str, units)) if len(units) <= 8 else f"{units[0]}..{units[-1]} ({len(units)})"

