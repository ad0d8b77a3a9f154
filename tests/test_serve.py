"""`langgraph dev` serves the graphs that langgraph.json declares; a langgraph-sdk client
chats with a unit of the colour net (unit 0 = redness) and labels one, with a scripted LLM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "Unit 0 responds to red."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The Agent Server on a free loopback port, its settings in LINE_* variables; stopped after."""
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LINE_")},
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LINE_MODEL": "tests.colour_net:colour_net", "LINE_LAYER": "relu", "LINE_CONTROL": "procedural:40",
           "LINE_CACHE_DIR": str(root / "cache"), "LINE_RUNS_DIR": str(root / "runs"),
           "LINE_LLM__PROVIDER": "scripted", "LINE_LLM__SCRIPT": json.dumps([ANSWER]),
           "LINE_LOOP": json.dumps({"images_per_concept": 3, "init_top": 1, "init_random": 0, "sweep": False,
                                    "bank_top": 0, "max_iterations": 1, "dedup": False, "confirm_top": 2})}
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
         "--port", str(port), "--config", str(ROOT / "langgraph.json")],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ok(url):
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ok", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_chat_thread_streams_scores_answers_and_keeps_its_history(server):
    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]

    first = list(client.runs.stream(thread, "chat", stream_mode="updates", input={
        "unit": 0, "messages": [{"role": "user", "content": "/score red background"}]}))
    assert [node for event in first if event.event == "updates" for node in event.data] == ["intake", "dedup", "tools", "stall"]

    second = list(client.runs.stream(thread, "chat", stream_mode=["messages-tuple", "updates"], input={
        "messages": [{"role": "user", "content": "What does unit 0 respond to?"}]}))
    assert any(event.data[0]["content"].startswith(ANSWER) for event in second if event.event == "messages")

    history = client.threads.get_history(thread)
    latest = history[0]["values"]
    assert [(s["concept"], s["source"]) for s in latest["steps"]] == [("red background", "user")]
    assert latest["steps"][0]["scores"]["auc"] > 0.9
    assert latest["messages"][-1]["content"].startswith(ANSWER + '\nBest so far: "red background" (MAD ')  # the answer node's
    assert not history[-1]["values"].get("steps")  # the thread's first checkpoint, before anything was scored


def test_the_labelling_graph_labels_a_unit_and_runs_bring_no_context(server):
    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    nodes = [node for event in client.runs.stream(thread, "label", input={"unit": 0}, stream_mode="updates")
             if event.event == "updates" for node in event.data]
    assert nodes[0] == "init" and nodes[-1] == "finalize"
    values = client.threads.get_state(thread)["values"]
    assert values["label"]["concept"] and values["label"]["scores"]["auc"] > 0.9
    assert values["stop_reason"] == "budget: 1 iterations"
    for assistant in client.assistants.search():
        assert client.assistants.get_schemas(assistant["assistant_id"])["context_schema"]["properties"] == {}
