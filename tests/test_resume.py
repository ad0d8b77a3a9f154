"""`line label` killed with SIGKILL mid-run, then `line label --resume`: no scored step is lost or repeated."""

import json
import os
import signal
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

from agent.runs.run import Run
from tests.helpers import COLOUR_NET

ROOT = Path(__file__).resolve().parent.parent


def test_kill_9_then_resume(tmp_path):
    concepts = [f"{c} {p}" for c, p in product(["red", "green", "blue", "yellow", "purple", "orange", "white"],
                                               ["stripes", "grid", "waves", "zigzag", "checkerboard", "spiral"])]
    replies = [json.dumps({"concept": c, "reasoning": "next"}) for c in concepts]
    config = tmp_path / "line.toml"
    config.write_text(
        f"model = '{COLOUR_NET}'\nlayer = 'relu'\ncontrol = 'procedural:40'\n"
        f"cache_dir = '{tmp_path / 'cache'}'\nruns_dir = '{tmp_path / 'runs'}'\n"
        "[llm]\nprovider = 'scripted'\nscript = " + json.dumps(replies) + "\n"
        "[loop]\nimages_per_concept = 3\ninit_top = 1\ninit_random = 0\nbank_top = 0\nstall = false\nsweep = false\n"
        "max_iterations = 16\nmax_images = 1000\nmax_llm_calls = 1000\nsummary = false\nsettle = 0\n")
    label = [sys.executable, "-m", "agent.ui.cli", "label", "--config", str(config), "--run-id", "killed"]
    process = subprocess.Popen(label, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_folder = tmp_path / "runs" / "killed"
    deadline = time.monotonic() + 120
    steps_before: list[str] = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        if (run_folder / "checkpoints.sqlite").exists():
            states = Run.open("killed", tmp_path / "runs").states()
            steps_before = [s.concept for s in states[0].steps] if 0 in states else []
            if len(steps_before) >= 4:
                break
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = [s.concept for s in Run.open("killed", tmp_path / "runs").states()[0].steps]
    assert saved[: len(steps_before)] == steps_before

    resumed = subprocess.run([sys.executable, "-m", "agent.ui.cli", "label", "--resume", "killed",
                              "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = Run.open("killed", tmp_path / "runs").states()[0]
    concepts_scored = [s.concept for s in final.steps]
    assert concepts_scored[: len(saved)] == saved
    assert len(concepts_scored) == len(set(concepts_scored)), "a step was scored twice"
    assert final.label is not None and final.stop_reason == "budget: 16 iterations"
