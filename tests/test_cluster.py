"""Labelling on a cluster (issue 11): Ray workers, a Postgres store, one shared concept bank.

The parts are real: Ray runs locally (`ray.init(num_cpus=2)`: the `ray_cluster` fixture, or
the `line label` process itself), PostgreSQL is a server started for the session
(tests/postgres.py). The LLM is the scripted provider, which answers each unit's thread from
its first reply, so a unit gets the same replies on any worker.
"""

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from itertools import product
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from agent.runs.run import Run, resume_settings
from agent.runs.backends import label
from agent.runs.context import labelling_context
from tests.helpers import COLOUR_NET, as_in_a_terminal, line, say
from tests.writers import add_concepts, write_entries
from tools.errors import LineError

ROOT = Path(__file__).resolve().parent.parent
CONCEPTS = [f"{c} {p}" for c, p in product(["red", "green", "blue", "yellow", "purple", "orange", "white"],
                                           ["stripes", "grid", "waves", "zigzag", "checkerboard", "spiral"])]


def cluster_settings(tmp_path, name: str, **sections):
    """The colour net with a scripted LLM; sections override (cluster=..., store=..., loop=...)."""
    loop = {"images_per_concept": 3, "init_top": 1, "init_random": 0, "sweep": False, "bank_top": 0,
            "max_iterations": 4, "summary": False} | sections.pop("loop", {})
    return load_settings(model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(tmp_path / f"{name}-cache"),
                         runs_dir=str(tmp_path / "runs"), llm={"provider": "scripted", "script": [say(c) for c in CONCEPTS]},
                         loop=loop, **sections)



def steps(state) -> list[tuple[str, str]]:
    return [(s.source, s.concept) for s in state.steps]


# --- the command line: Ctrl-C and --resume on Ray ---------------------------------------------------
def test_ctrl_c_on_ray_then_resume_hands_out_only_unfinished_units(capsys, ray_cluster, tmp_path):
    """`line label` on Ray started by the command itself (address "local"): Ctrl-C stops it
    within seconds with the resume command; `--resume` (here on this process's cluster)
    labels only what was not finished."""
    config = tmp_path / "line.toml"
    config.write_text(
        f"model = '{COLOUR_NET}'\nlayer = 'relu'\ncontrol = 'procedural:40'\n"
        f"cache_dir = '{tmp_path / 'cache'}'\nruns_dir = '{tmp_path / 'runs'}'\n"
        "[llm]\nprovider = 'scripted'\nscript = " + json.dumps([say(c) for c in CONCEPTS]) + "\n"
        "[loop]\nimages_per_concept = 3\ninit_top = 1\ninit_random = 0\nsweep = false\nbank_top = 0\n"
        "max_iterations = 6\nsummary = false\n"
        "[cluster]\nbackend = 'ray'\naddress = 'local'\nworkers = 2\n")
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen([sys.executable, "-m", "agent.ui.cli", "label", "--config", str(config), "--units", "0-3",
                                "--run-id", "c"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 240
    table = {}
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        if (runs / "c" / "run.json").exists():
            table = Run.open("c", runs).store.units()
            if any(row.status == "done" for row in table.values()):
                break
    assert process.poll() is None, f"the run ended before Ctrl-C: {process.communicate()}"
    process.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - stopped < 20, err
    assert "Resume with: line label --resume c" in err
    before = Run.open("c", runs)
    finished = {unit for unit, row in before.store.units().items() if row.status == "done"}
    saved = {unit: steps(state) for unit, state in before.states().items()}
    assert finished and len(finished) < 4

    code, _, err = line(capsys, "label", "--resume", "c", "--runs-dir", runs)
    assert code == 0, err
    shown = {int(line.split(":")[0].split()[1]) for line in err.splitlines() if line.startswith("unit ")}
    assert shown and not shown & finished, "a finished unit was handed out again"
    after = Run.open("c", runs)
    table = after.store.units()
    assert {row.status for row in table.values()} == {"done"} and sorted(table) == [0, 1, 2, 3]
    assert all(table[unit].attempts == 1 for unit in finished)
    for unit, state in after.states().items():
        assert steps(state)[: len(saved.get(unit, []))] == saved.get(unit, [])
        concepts = [c for _, c in steps(state)]
        assert len(concepts) == len(set(concepts)), f"unit {unit}: a step was scored twice"
        assert state.label is not None
    history = json.loads((runs / "c" / "history.json").read_text())
    assert sorted(history["units"]) == ["0", "1", "2", "3"]


# --- Ray workers in this process's cluster ------------------------------------------------------------
def test_two_ray_workers_give_the_labels_of_the_local_backend(ray_cluster, tmp_path):
    local = cluster_settings(tmp_path, "local")
    run = Run.create(local, [0, 1, 2, 3], "local")
    expected = label(run, labelling_context(local, build_engine(local)))

    on_ray = cluster_settings(tmp_path, "ray", cluster={"backend": "ray", "workers": 2})
    run = Run.create(on_ray, [0, 1, 2, 3], "ray")
    assert labelling_context(on_ray, build_engine(on_ray)) is None  # the workers build their own
    seen: list[int] = []
    states = label(run, None, on_update=lambda unit, node, state: seen.append(unit))
    assert sorted(states) == [0, 1, 2, 3] and set(seen) == {0, 1, 2, 3}
    for unit in range(4):
        assert states[unit].label.concept == expected[unit].label.concept
        assert states[unit].label.scores.auc == pytest.approx(expected[unit].label.scores.auc)
        assert steps(states[unit]) == steps(expected[unit])
    workers = {row.worker for row in run.store.units().values()}
    assert len(workers) == 2 and not any(w.endswith(f":{os.getpid()}") for w in workers)  # two other processes
    assert json.loads((run.folder / "history.json").read_text())["units"]["3"]["label"]["concept"] == \
        expected[3].label.concept


def test_a_killed_worker_loses_no_scored_step_and_repeats_none(ray_cluster, postgres_url, tmp_path):
    settings = cluster_settings(tmp_path, "kill", cluster={"backend": "ray", "workers": 2},
                                store={"url": postgres_url},
                                loop={"max_iterations": 24, "max_images": 1000, "stall": False, "settle": 0})
    run = Run.create(settings, [0, 1], "killed")
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(states=label(run, None)))
    driver.start()
    observer = Run.open("killed", settings.runs_dir)
    deadline = time.monotonic() + 180
    before: list = []
    victim = None
    while time.monotonic() < deadline and driver.is_alive():
        time.sleep(0.2)
        table = observer.store.units()
        if table.get(0) and table[0].status == "running":
            state = observer.states().get(0)
            if state and len([s for s in state.steps if s.source == "llm"]) >= 4:
                before, victim = steps(state), table[0].worker
                break
    assert victim, "unit 0 finished before its worker could be killed"
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)
    driver.join(timeout=240)
    assert not driver.is_alive() and "states" in result
    state = result["states"][0]
    assert steps(state)[: len(before)] == before, "a scored step was lost"
    concepts = [c for _, c in steps(state)]
    assert len(concepts) == len(set(concepts)), "a step was scored twice"
    assert state.label is not None and state.stop_reason == "budget: 24 iterations"
    row = run.store.units()[0]
    assert row.status == "done" and row.attempts == 2 and row.worker != victim  # retried on another worker
    assert not (run.folder / "checkpoints.sqlite").exists()  # the checkpoints are in Postgres


def test_two_workers_adding_the_same_concepts_leave_one_entry_each(ray_cluster, postgres_url, tmp_path):
    add = ray_cluster.remote(num_cpus=1)(add_concepts)
    concepts = [f"concept {i}" for i in range(40)]
    bank_file = str(tmp_path / "bank.jsonl")
    start = time.time() + 3
    added = ray_cluster.get([add.remote(postgres_url, bank_file, concepts, start) for _ in range(2)])
    from agent.runs.store import Store
    from tools.bank import FileBank

    for entries, flags in ((Store(postgres_url, "").bank("layer").entries(), [a[:40] for a in added]),
                           (FileBank(bank_file).entries(), [a[40:] for a in added])):
        assert sorted(c for c, _ in entries) == sorted(concepts)  # one entry each, none lost
        assert [a or b for a, b in zip(*flags)] == [True] * 40 and not any(a and b for a, b in zip(*flags))


# --- a Postgres-backed run reads like a SQLite one ----------------------------------------------------
def test_a_postgres_run_reads_as_a_sqlite_one(capsys, monkeypatch, postgres_url, tmp_path):
    config = tmp_path / "line.toml"
    config.write_text("[llm]\nprovider = 'scripted'\nscript = " + json.dumps([say(c) for c in CONCEPTS]) + "\n"
                      "[loop]\nimages_per_concept = 2\ninit_top = 1\ninit_random = 0\nsweep = false\nmax_iterations = 2\n"
                      f"[store]\nurl = '{postgres_url}'\n")
    runs = tmp_path / "runs"
    base = ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", tmp_path / "cache",
            "--config", config, "--runs-dir", runs]
    assert line(capsys, "label", *base, "--units", "0-1", "--run-id", "pg")[0] == 0
    assert sorted(p.name for p in (runs / "pg").iterdir()) == ["history.json", "labels.csv", "run.json"]
    code, out, _ = line(capsys, "history", "pg", "--unit", "1", "--runs-dir", runs, "--json")
    assert code == 0
    assert json.loads(out) == json.loads((runs / "pg" / "history.json").read_text())["units"]["1"]
    assert line(capsys, "report", "pg", "--runs-dir", runs, "--trust-run")[0] == 0
    assert "unit-1.html" in (runs / "pg" / "report" / "index.html").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("/score green stripes\n/quit\n"))
    code, out, _ = line(capsys, "chat", "--run", "pg", "--unit", "1", "--runs-dir", runs, "--trust-run")
    assert code == 0 and "score_concept: 'green stripes'" in out
    thread = next(p.name for p in runs.iterdir() if p.name.startswith("chat-"))
    code, out, _ = line(capsys, "history", thread, "--unit", "1", "--runs-dir", runs, "--json")
    assert "green stripes" in [s["concept"] for s in json.loads(out)["steps"]]

    import line_agent

    opened = line_agent.open_run("pg", runs)
    assert [u.concept for u in opened.labels] == [json.loads((runs / "pg" / "history.json").read_text())["units"][u]
                                                  ["label"]["concept"] for u in ("0", "1")]
    # one writer: the lease is held in Postgres, and named in the error
    with Run.open("pg", runs).store.lock():
        code, _, err = line(capsys, "label", "--resume", "pg", "--runs-dir", runs)
    assert code == 2 and "being written by another process" in err and f"pid {os.getpid()}" in err
    # a run id is registered once in a store that several runs share
    code, _, err = line(capsys, "label", *base[:-2], "--runs-dir", tmp_path / "other-runs", "--run-id", "pg")
    assert code == 2 and "exists already in the store" in err


def test_store_and_cluster_settings(capsys, tmp_path, settings):
    with pytest.raises(LineError, match="holds a password") as error:
        load_settings(store={"url": "postgresql://line:s3cret@db:5432/line"})
    assert "s3cret" not in str(error.value)
    with pytest.raises(LineError, match="store.url"):
        load_settings(store={"url": "mysql://line@db/line"})
    with pytest.raises(LineError, match="cluster.backend"):
        load_settings(cluster={"backend": "slurm"})
    run = Run.create(settings, [0], "r")
    moved = resume_settings(run, {"cluster": {"backend": "ray", "workers": 8, "address": "auto"}})
    assert moved.cluster.workers == 8
    with pytest.raises(LineError, match=r"store.url \(''"):
        resume_settings(run, {"store": {"url": "sqlite:///elsewhere.sqlite"}})
    on_ray = load_settings(**(settings.model_dump() | {"cluster": {"backend": "ray"}}))
    from agent.llm import ScriptedChatModel

    with pytest.raises(LineError, match="cannot travel to Ray workers"):
        labelling_context(on_ray, build_engine(on_ray), ScriptedChatModel(replies=["x"]))


# --- the shared cache: writers in several processes ---------------------------------------------------
def test_the_cache_and_the_bank_stay_whole_under_writers_in_several_processes(tmp_path):
    root = str(tmp_path / "cache")
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=write_entries, args=(root, w)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    from tools.bank import FileBank
    from tools.cache import DiskCache

    cache = DiskCache(root)
    for i in range(60):
        assert cache.has_image(f"{i:064x}") and cache.load_image(f"{i:064x}").getpixel((0, 0)) == (i, 2 * i, 3 * i)
        assert cache.load_array(f"{i:064x}").tolist() == [float(i)] * 16
    assert not list(Path(root).rglob(".tmp-*"))  # no temporary file left behind
    entries = FileBank(Path(root) / "banks" / "layer.jsonl").entries()
    assert sorted(c for c, _ in entries) == sorted(f"concept {i}" for i in range(20))
