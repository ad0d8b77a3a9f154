"""Labelling on Ray (`[cluster] backend = "ray"`): one actor per worker.

Each worker (`UnitWorker`) loads the target model, the generator and the LLM client once
(an embedded SmolLM2 runs one server per worker; `[llm] provider = "openai-compatible"`
shares one endpoint), then labels the units it is handed, writing each unit's checkpoints
to the run's store after every node. Ray gives each worker `cpus_per_worker` CPUs (torch
uses as many threads) and `gpus_per_worker` GPUs.

The driver (the process that calls `label_on_ray`, e.g. `line label`) holds the run's
writer lock, asks one worker to prepare the layer (control activations, the sweep), then
hands out the unfinished units as workers free up (`ray.wait` over the units in flight).
Progress comes back through a Ray queue; the driver shows it and writes `history.json`.

- A worker whose process dies (kill -9, out of memory, a lost node) has its unit put back at
  the head of the queue and a new worker takes its place: the unit goes on from its last
  checkpoint, so no scored step is lost and none repeated.
- Ctrl-C (KeyboardInterrupt in the driver) kills the workers: every node they finished is
  checkpointed; `line label --resume` hands out the units not finished.
- The workers must see the run's store: with SQLite (the default) they share this machine's
  run folder; workers on other machines need `[store] url = "postgresql://..."`, and the
  code and `cache_dir` on a path every node sees.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import ClusterConfig, Settings
from agent.runs.engine_factory import build_engine
from agent.loop.graph import build_label_graph
from agent.runs.run import EXPORT_EVERY, Run, Update, prepare
from agent.runs.context import build_context
from agent.loop.state import NeuronState
from agent.runs.store import open_store, worker_name
from tools.errors import LineError

if TYPE_CHECKING:
    import ray

MAX_ATTEMPTS = 3  # a unit whose worker died this often is reported rather than handed out again


class UnitWorker:
    """A Ray actor: the engine and runtime context of a run, built once, labelling units."""

    def __init__(self, folder: str, settings: dict, units: list[int], updates: Any = None, run_id: str | None = None):
        self._open = ExitStack()
        self._error: LineError | None = None
        self.updates = updates
        try:
            self._setup(Path(folder), Settings.model_validate(settings), units, run_id)
        except LineError as error:  # reported by `ready`, as the error it is
            self._error = error

    def _setup(self, folder: Path, settings: Settings, units: list[int], run_id: str | None) -> None:
        unreachable = open_store(settings).reachable_from_here(folder)
        if unreachable:
            raise LineError(f"a Ray worker cannot reach the run's store: {unreachable}.",
                            'Workers on other machines need [store] url = "postgresql://..." (and cache_dir on a '
                            "path every node sees).")
        self.run = Run(folder, settings, units, run_id)  # a network run's layer: its id is not its folder's name
        self.context = build_context(settings, build_engine(settings))
        self.graph = build_label_graph(self._open.enter_context(self.run.store.checkpointer()))

    def ready(self) -> str:
        """The worker's name (host:pid), once it is built; its start-up error otherwise."""
        if self._error is not None:
            raise self._error
        return worker_name()

    def prepare(self) -> dict | None:
        return prepare(self.context)

    def label(self, unit: int) -> NeuronState:
        return self.run.label_unit(self.graph, self.context, unit, self._report if self.updates is not None else None)

    def _report(self, unit: int, node: str, state: NeuronState) -> None:
        self.updates.put_nowait((unit, node, state))


def label_on_ray(run: Run, on_update: Update | None = None) -> dict[int, NeuronState]:
    """Label `run`'s unfinished units on Ray workers; returns every started unit's state."""
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as error:
        raise LineError("cluster.backend = \"ray\" needs Ray, which is not installed.",
                        "Install the cluster extra: pip install -e '.[cluster]' (make setup does).") from error

    cluster = run.settings.cluster
    started = connect(cluster)
    workers: list[Any] = []
    updates = None
    states: dict[int, NeuronState] = {}
    try:
        with run.writer():
            fits(cluster)
            run.check_checkpoints()
            run.store.create()
            states = run.states()  # the finished units' too; and the store's tables exist before workers start
            updates = Queue(actor_options={"num_cpus": 0}) if on_update else None
            actor = ray.remote(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker,
                               max_restarts=0)(UnitWorker)

            def spawn():
                worker = actor.remote(str(run.folder.resolve()), run.settings.public(), run.units, updates, run.id)
                workers.append(worker)
                return worker

            idle = [spawn() for _ in range(cluster.workers)]
            _get([worker.ready.remote() for worker in idle])
            run.record_sweep(_get(idle[0].prepare.remote()))
            queue = deque(run.unfinished())
            in_flight: dict[Any, tuple[Any, int]] = {}
            deaths: Counter[int] = Counter()
            exported = time.monotonic()
            while queue or in_flight:
                while idle and queue:
                    worker, unit = idle.pop(), queue.popleft()
                    in_flight[worker.label.remote(unit)] = (worker, unit)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.25)
                _show(updates, on_update)
                for ref in done:
                    worker, unit = in_flight.pop(ref)
                    try:
                        states[unit] = _get(ref)
                        idle.append(worker)
                    except ray.exceptions.RayActorError as error:  # the worker's process died
                        deaths[unit] += 1
                        if deaths[unit] >= MAX_ATTEMPTS:
                            raise LineError(f"unit {unit}: its worker died {deaths[unit]} times ({_first_line(error)}).",
                                            "Check the workers' memory and logs, then resume the run.") from error
                        ray.kill(worker)
                        queue.appendleft(unit)  # from its last checkpoint, on the next worker free
                        idle.append(spawn())
                if time.monotonic() - exported > EXPORT_EVERY:
                    run.export(states=states)
                    exported = time.monotonic()
            _show(updates, on_update)
            return {unit: states[unit] for unit in run.units if unit in states}
    finally:
        for worker in workers:  # on Ctrl-C or an error too: what they finished is checkpointed
            ray.kill(worker)
        if updates is not None:
            updates.shutdown(force=True)
        if run.folder.exists():
            run.export()
        if started:
            ray.shutdown()


def connect(cluster: ClusterConfig) -> bool:
    """Join the Ray cluster of `cluster.address` unless this process already has; whether
    this call started the connection (and so should end it)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise LineError(f"cannot reach the Ray cluster at cluster.address = {cluster.address!r} ({_first_line(error)}).",
                        'Start one (ray start --head), give its ray://HOST:PORT, or set cluster.address = "local".') from error
    return True


def fits(cluster: ClusterConfig) -> None:
    """A LineError when the cluster cannot hold every worker at once (the units handed to the
    ones left waiting would never start)."""
    import ray

    have = ray.cluster_resources()
    for name, each in (("CPU", cluster.cpus_per_worker), ("GPU", cluster.gpus_per_worker)):
        if each and have.get(name, 0) < cluster.workers * each - 1e-9:
            raise LineError(f"the Ray cluster has {have.get(name, 0):g} {name}s: {cluster.workers} workers x {each:g} "
                            f"{name}s each do not fit.", f"Lower cluster.workers or cluster.{name.lower()}s_per_worker.")


def _get(refs):
    """ray.get, with a worker's LineError raised as itself (the CLI prints it as one line)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, LineError):
            raise error.cause from None
        raise


def _show(updates: Any, on_update: Update | None) -> None:
    if updates is not None and on_update is not None:
        for unit, node, state in updates.get_nowait_batch(updates.qsize()):
            on_update(unit, node, state)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else error.__class__.__name__
