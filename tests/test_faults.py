"""The fault suite: a hostile user's probes of `line` (issue 12), one test per defect, plus
property tests of the parsers and an OpenAI-compatible server that misbehaves.

Each test drives `line` as a user does (in-process through main(), or as a process where a
signal or a second process is the point) on the colour net, with a fresh cache folder.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import COLOUR_NET, as_in_a_terminal, line, one_line_error, say, write_config
from evals.fake_openai import FakeOpenAI
from tools.errors import LineError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-never-stored-4f1d9a"



@pytest.fixture
def base(tmp_path):
    return ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", tmp_path / "cache"]


# --- 1. two writers on one run ------------------------------------------------------------------
def test_one_writer_per_run(capsys, base, tmp_path):
    from agent.chat import ChatSession, chat_context
    from agent.runs.engine_factory import build_engine
    from agent.llm import ScriptedChatModel
    from agent.runs.lock import RunLock
    from agent.runs.run import Run

    runs = tmp_path / "runs"
    config = write_config(tmp_path / "line.toml", [say("red background")])
    assert line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)[0] == 0
    with RunLock(runs / "r"):  # another writer holds the run
        code, _, err = line(capsys, "label", "--resume", "r", "--runs-dir", runs)
        run = Run.open("r", runs)
        with pytest.raises(LineError, match="being written by another process"):  # a chat on its thread
            ChatSession(run, chat_context(run.settings, build_engine(run.settings), ScriptedChatModel(replies=["hi"])))
    assert one_line_error(code, err, "being written by another process", f"pid {os.getpid()}",
                          f"host {socket.gethostname()}")
    assert line(capsys, "history", "r", "--unit", "0", "--runs-dir", runs)[0] == 0  # readers are never locked out

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from agent.runs.lock import RunLock; "
                               "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", runs / "r"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    code, _, err = line(capsys, "label", "--resume", "r", "--runs-dir", runs)
    assert one_line_error(code, err, f"pid {holder.pid}")
    holder.kill()  # a writer killed with -9 leaves its name behind, not its lock
    holder.wait()
    with RunLock(runs / "r") as lock:
        assert f"pid {holder.pid}" in lock.note and "no longer running" in lock.note
    assert line(capsys, "label", "--resume", "r", "--runs-dir", runs)[0] == 0


# --- 2 and 3. untrusted text reaches the terminal as text ------------------------------------------
MARKUP_AND_ESCAPES = "[/] [bold red]loud[/bold red] \x1b]0;pwned\x07\x1b[2J\u202e"


def test_untrusted_text_is_printed_as_itself(capsys, base, tmp_path):
    code, out, _ = line(capsys, "score", *base, "--unit", "0", "--concept", "red [/] stripes")
    assert code == 0 and "red [/] stripes" in out
    code, out, _ = line(capsys, "score", *base, "--unit", "0", "--concept", "[blink red]green[/blink red] circles")
    assert code == 0 and "[blink red]green[/blink red] circles" in out

    runs = tmp_path / "runs"
    config = write_config(tmp_path / "line.toml", [say("blue background", MARKUP_AND_ESCAPES)], bank_top=2)
    code, _, _ = line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)
    code, out, _ = line(capsys, "history", "r", "--unit", "0", "--runs-dir", runs)
    assert code == 0 and "[bold red]loud[/bold red]" in out  # the reasoning, shown as it is
    assert "red [/] stripes" in out  # drawn from the concept bank, where `line score` put it


def test_terminal_escapes_are_shown_not_obeyed(capsys, base, tmp_path):
    runs = tmp_path / "runs"
    config = write_config(tmp_path / "line.toml", [say("blue background", MARKUP_AND_ESCAPES)])
    assert line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)[0] == 0
    code, out, _ = line(capsys, "history", "r", "--unit", "0", "--runs-dir", runs)
    assert code == 0 and "\x1b" not in out and "\u202e" not in out and "\\x1b]0;pwned\\x07" in out
    code, _, err = line(capsys, "score", *base, "--unit", "0", "--concept", "red\x1b[2J stripes")
    assert one_line_error(code, err, "control characters") and "\x1b" not in err


# --- 4. run folders are data --------------------------------------------------------------------------
def test_run_folders_do_not_run_code(capsys, base, tmp_path):
    runs, marker = tmp_path / "runs", tmp_path / "evil-ran"
    config = write_config(tmp_path / "line.toml", [say("red background")])
    assert line(capsys, "label", *base, "--config", config, "--run-id", "mine", "--runs-dir", runs)[0] == 0
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom tests.colour_net import colour_net as factory\n")
    shutil.copytree(runs / "mine", runs / "theirs")
    meta = json.loads((runs / "theirs" / "run.json").read_text())
    meta["settings"]["model"] = f"{evil}:factory"
    (runs / "theirs" / "run.json").write_text(json.dumps(meta))

    code, out, _ = line(capsys, "report", "theirs", "--runs-dir", runs)
    assert code == 0 and not marker.exists()
    page = (runs / "theirs" / "report" / "unit-0.html").read_text()
    assert "red background" in page and "--trust-run" in page  # written from the stored data alone
    assert line(capsys, "history", "theirs", "--unit", "0", "--runs-dir", runs)[0] == 0 and not marker.exists()
    code, _, err = line(capsys, "chat", "--run", "theirs", "--unit", "0", "--runs-dir", runs)
    assert one_line_error(code, err, "--trust-run") and not marker.exists()
    assert line(capsys, "report", "theirs", "--runs-dir", runs, "--trust-run")[0] == 0 and marker.exists()


# --- 5. caches know when the model changed ------------------------------------------------------------
FACTORY = """import torch
from torch import nn

def factory():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, {channels}, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.mul_({sign})
    return net
"""


def test_caches_know_when_the_model_changed(capsys, tmp_path):
    factory = tmp_path / "m.py"
    args = ["score", "--model", f"{factory}:factory", "--layer", "0", "--control", "procedural:40",
            "--cache-dir", tmp_path / "cache", "--concept", "red", "--json"]

    def score(unit: int = 0) -> dict:
        code, out, err = line(capsys, *args, "--unit", unit)
        assert code == 0, err
        return json.loads(out)

    factory.write_text(FACTORY.format(channels=4, sign=1.0))
    first, again = score(), score()
    assert again["units"] == first["units"] and again["cache"].get("activation_miss", 0) == 0
    warm = subprocess.run([sys.executable, "-c", "import sys; from agent.ui.cli import main; main(sys.argv[1:]); "
                           "print('torch' in sys.modules)", *map(str, args), "--unit", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert warm.stdout.split()[-1] == "False", warm.stderr  # the fingerprint keeps a cached score free of torch
    factory.write_text(FACTORY.format(channels=4, sign=-1.0))  # the weights' sign flipped
    flipped = score()
    assert flipped["units"][0]["auc"] != first["units"][0]["auc"] and flipped["cache"]["activation_miss"] > 0
    factory.write_text(FACTORY.format(channels=8, sign=1.0))  # more channels
    assert score(unit=5)["units"][0]["unit"] == 5


# --- 6. undrawable concepts are neither scored nor banked ---------------------------------------------
def test_undrawable_concepts_are_refused_and_never_banked(capsys, base, tmp_path):
    for concept in ("", "   ", "../../etc/passwd", "a/b\\c", "red " * 30):
        code, _, err = line(capsys, "score", *base, "--unit", "0", "--concept", concept)
        assert one_line_error(code, err), (concept, err)
    assert line(capsys, "score", *base, "--unit", "0", "--concept", "red")[0] == 0
    bank = next((tmp_path / "cache" / "banks").glob("*.jsonl"))
    assert [json.loads(entry)["concept"] for entry in bank.read_text().splitlines()] == ["red"]

    from agent.config import load_settings
    from agent.runs.engine_factory import build_engine

    with bank.open("a") as handle:  # a bank written by hand (or an older version): only what passes is read
        handle.write(json.dumps({"concept": "../../etc/passwd", "images": []}) + "\n")
    engine = build_engine(load_settings(model=COLOUR_NET, layer="relu", control="procedural:40",
                                        cache_dir=str(tmp_path / "cache")))
    assert list(engine.bank()) == ["red"]


# --- 7. Ctrl-C stops within seconds and keeps every finished step ---------------------------------------
def test_ctrl_c_stops_within_seconds_and_keeps_every_step(tmp_path):
    from agent.runs.run import Run

    concepts = [f"{c} {p}" for c, p in product(["red", "green", "blue", "yellow", "purple", "orange", "white"],
                                               ["stripes", "grid", "waves", "zigzag", "checkerboard", "spiral"])]
    config = write_config(tmp_path / "line.toml", [say(c) for c in concepts], max_iterations=40, max_images=1000,
                          max_llm_calls=1000, stall=False)
    runs = tmp_path / "runs"
    label = [sys.executable, "-m", "agent.ui.cli", "label", "--model", COLOUR_NET, "--layer", "relu", "--control",
             "procedural:40", "--cache-dir", str(tmp_path / "cache"), "--config", str(config), "--units", "0-2",
             "--run-id", "c", "--runs-dir", str(runs)]
    process = subprocess.Popen(label, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 120
        while len(seen) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            states = Run.open("c", runs).states() if (runs / "c" / "checkpoints.sqlite").exists() else {}
            seen = [s.concept for s in states[0].steps] if 0 in states else []
        assert process.poll() is None, "the run ended before Ctrl-C"
        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - start < 10
    finally:
        process.kill()
    assert process.returncode == 130 and "Resume with: line label --resume c" in err
    states = Run.open("c", runs).states()
    assert list(states) == [0] and states[0].label is None  # the unit stopped mid-way; the others never started
    saved = [s.concept for s in states[0].steps]
    assert saved[: len(seen)] == seen
    history = json.loads((runs / "c" / "history.json").read_text())
    assert [s["concept"] for s in history["units"]["0"]["steps"]] == saved


# --- 8. tracebacks instead of one-line errors -----------------------------------------------------------
def test_bad_config_and_environment_are_one_line_errors(capsys, base, tmp_path, monkeypatch):
    config = tmp_path / "latin1.toml"
    config.write_bytes("model = 'caf\u00e9'\n".encode("latin-1"))
    assert one_line_error(*line(capsys, "score", *base, "--config", config, "--concept", "red")[::2], "UTF-8")
    monkeypatch.setenv("LINE_LLM", "notjson")
    assert one_line_error(*line(capsys, "score", *base, "--concept", "red")[::2], "LINE_LLM", "JSON")
    monkeypatch.delenv("LINE_LLM")
    monkeypatch.setenv("LINE_BOGUS", "1")
    assert one_line_error(*line(capsys, "score", *base, "--concept", "red")[::2], "LINE_BOGUS")


# --- 9. unchecked numbers -------------------------------------------------------------------------------
def test_unchecked_numbers_are_refused(capsys, base, tmp_path):
    runs = tmp_path / "runs"
    for argv in (["score", *base, "--units", "5-2", "--concept", "red"],
                 ["label", *base, "--units", "5-2", "--runs-dir", runs],
                 ["score", *base, "--images", "-2", "--concept", "red"],
                 ["score", *base, "--images", "0", "--concept", "red"],
                 ["score", *base, "--units", "all", "--top", "-3", "--concept", "red"]):
        code, out, err = line(capsys, *argv)
        assert one_line_error(code, err) and not out, argv
    assert not runs.exists()
    huge = [*base[:4], "--control", "procedural:99999999999999999999", *base[6:]]
    assert one_line_error(*line(capsys, "score", *huge, "--concept", "red")[::2], "procedural:")


# --- 10. run ids stay inside runs_dir; --resume keeps what was scored ------------------------------------
def test_run_ids_and_resume_flags(capsys, base, tmp_path):
    runs = tmp_path / "runs"
    config = write_config(tmp_path / "line.toml", [say("red background")])
    for run_id in ("../outside", str(tmp_path / "absolute")):
        assert one_line_error(*line(capsys, "label", *base, "--config", config, "--run-id", run_id,
                                    "--runs-dir", runs)[::2], "run id")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "absolute").exists()
    assert line(capsys, "label", *base, "--config", config, "--units", "0-1", "--run-id", "r", "--runs-dir", runs)[0] == 0
    for flags, word in ((["--units", "0-5"], "units"), (["--model", "efficientnet-lite0"], "model"),
                        (["--layer", "features"], "layer"), (["--generator", "diffusers:x"], "generator")):
        assert one_line_error(*line(capsys, "label", "--resume", "r", "--runs-dir", runs, *flags)[::2], word), flags
    code, out, _ = line(capsys, "label", "--resume", "r", "--runs-dir", runs, "--units", "0-1", "--model", COLOUR_NET)
    assert code == 0 and "labels" in out  # the run's own values change nothing


# --- 11. LLM failures are counted and shown ---------------------------------------------------------------
def test_llm_failures_are_counted_and_shown(capsys, base, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    runs = tmp_path / "runs"
    with FakeOpenAI("error") as server:
        config = tmp_path / "line.toml"
        config.write_text(f"[llm]\nprovider = 'openai-compatible'\nbase_url = '{server.url}'\nretries = 1\ntimeout = 5\n"
                          "[loop]\nsweep = false\nimages_per_concept = 2\ninit_top = 1\ninit_random = 0\nbank_top = 0\n"
                          "max_iterations = 4\nfailure_streak = 2\ndedup = false\n")
        code, out, err = line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)
    assert code == 0
    state = json.loads((runs / "r" / "history.json").read_text())["units"]["0"]
    usage = state["usage"]
    assert usage["llm_calls"] == usage["llm_failures"] == usage["llm_http_errors"] > 0
    assert server.requests == 2 * usage["llm_calls"]  # the client's one retry per call, not retries squared
    assert sum(e["kind"] == "llm_failure" and "HTTP 500" in e["reason"] for e in state["events"]) == usage["llm_calls"]
    assert f"{usage['llm_calls']} ({usage['llm_calls']} failed)" in " ".join(out.split())
    warning = " ".join(err.split())
    assert "warning: unit 0 was labelled without the LLM" in warning
    assert f"({usage['llm_calls']} got no answer" in warning and "Check the LLM" in warning
    assert line(capsys, "report", "r", "--runs-dir", runs, "--trust-run")[0] == 0
    assert "labelled without the LLM" in (runs / "r" / "report" / "unit-0.html").read_text()


def test_an_llm_whose_answers_are_never_scored_is_told_apart_from_a_dead_one(capsys, base, tmp_path):
    runs, config = tmp_path / "runs", tmp_path / "line.toml"
    config.write_text("[llm]\nprovider = 'scripted'\nscript = ['{\"reasoning\": \"r\", \"concept\": \"the smell of rain\"}']\n"
                      "[loop]\nsweep = false\nimages_per_concept = 2\ninit_top = 1\nbank_top = 0\nmax_iterations = 3\n")
    code, _, err = line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)
    warning = " ".join(err.split())
    assert code == 0 and "was labelled without the LLM" in warning, warning
    assert "were unusable" in warning and "A stronger LLM" in warning and "Check the LLM" not in warning, warning[-400:]


# --- 12. small ones ---------------------------------------------------------------------------------------
def test_small_ones(capsys, base, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    openai = tmp_path / "openai.toml"
    openai.write_text("[llm]\nprovider = 'openai'\n")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert one_line_error(*line(capsys, "label", *base, "--config", openai, "--run-id", "r", "--runs-dir", runs)[::2],
                          "API key")
    assert not (runs / "r").exists()  # a failed start leaves no run behind

    code, out, err = line(capsys, "label", *base, "--config", write_config(tmp_path / "line.toml", [say("red")]),
                          "--run-id", "r", "--runs-dir", runs)
    assert code == 0 and "\n\n" not in err and "unit    0: finalize" in err  # plain lines, not a live display

    code, out, _ = line(capsys, "score", *base, "--unit", "0", "--concept", "blue", "--json")
    path = Path(json.loads(out)["images"][0])
    path.write_bytes(b"")  # a cached image cut to nothing
    code, out, _ = line(capsys, "score", *base, "--unit", "0", "--concept", "blue", "--json")
    result = json.loads(out)
    assert path.stat().st_size > 0 and result["cache"]["image_repaired"] == 1

    from agent.runs.run import Run

    Run.create(Run.open("r", runs).settings, [0, 1], "waiting")
    assert one_line_error(*line(capsys, "history", "waiting", "--unit", "1", "--runs-dir", runs)[::2], "not started yet")


# --- the README's guarantee: secrets never stored ----------------------------------------------------------
def test_secrets_are_never_stored(capsys, base, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    runs = tmp_path / "runs"
    with FakeOpenAI("ok", reply=say("red background")) as server:
        config = tmp_path / "line.toml"
        config.write_text(f"[llm]\nprovider = 'openai-compatible'\nbase_url = '{server.url}'\n"
                          "[loop]\nsweep = false\nimages_per_concept = 2\ninit_top = 1\ninit_random = 0\nmax_iterations = 2\ndedup = false\n")
        assert line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)[0] == 0
        assert line(capsys, "report", "r", "--runs-dir", runs, "--trust-run")[0] == 0
    assert server.headers and all(h["authorization"] == f"Bearer {SECRET}" for h in server.headers)
    stored = [p for folder in (runs, tmp_path / "cache") for p in folder.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if SECRET.encode() in p.read_bytes()]


# --- property tests of the parsers --------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789-, all\t", max_size=24)), st.integers(1, 5000))
def test_unit_lists_parse_or_fail_with_one_line(text, units):
    from tools.engine import parse_units

    try:
        chosen = parse_units(text, units)
    except LineError as error:
        assert "\n" not in str(error)
        return
    assert chosen and len(chosen) == len(set(chosen)) and all(0 <= u < units for u in chosen)


CONCEPT_WORDS = ["red", "Blue", "stripes", "three", "on", "a", "background", "non", "large", "polka", "dots",
                 "and", "with", "-", "'", "/", "[/]", "\x1b", "7", ""]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(CONCEPT_WORDS), max_size=30).map(" ".join)))
def test_concepts_parse_or_fail_with_one_line(text):
    from tools.concepts import MAX_CONCEPT_CHARS, check_concept
    from tools.generators.procedural import ProceduralGenerator

    try:
        concept = check_concept(text, ProceduralGenerator(size=16))
    except LineError as error:
        assert "\n" not in str(error)
        return
    assert concept == " ".join(concept.split()) and 0 < len(concept) <= MAX_CONCEPT_CHARS


# --- agent.llm against a misbehaving OpenAI-compatible server ------------------------------------------------
@pytest.mark.parametrize("mode, outcome", [("garbage", "unusable"), ("error", "http"), ("hang", "timeout"),
                                           ("drop", "unavailable"), ("ok", "answer")])
def test_llm_through_a_misbehaving_server(mode, outcome):
    from langchain_core.messages import HumanMessage

    from agent.config import LLMConfig
    from agent.llm import LLMUnavailable, ask_structured, make_chat_model
    from agent.loop.proposal import ConceptAnswer

    retries = 1
    with FakeOpenAI(mode, reply=say("red stripes")) as server:
        chat = make_chat_model(LLMConfig(provider="openai-compatible", base_url=server.url, retries=retries, timeout=0.5))
        try:
            reply = ask_structured(chat, [HumanMessage("a concept?")], ConceptAnswer, retries=retries)
        except LLMUnavailable as error:
            reply = error
    if outcome == "unavailable":
        assert isinstance(reply, LLMUnavailable) and "did not answer" in str(reply)
        assert server.requests == retries + 1
    elif outcome == "answer":
        assert reply.value.concept == "red stripes" and reply.usage().llm_failures == 0 and server.requests == 1
    elif outcome == "unusable":  # an answer that cannot be read is asked for again
        assert reply.value is None and reply.attempts == server.requests == retries + 1
        assert reply.usage().llm_failures == retries + 1 and reply.http_errors == reply.timeouts == 0
    else:  # a failed request: the client retried it, and it is not asked again
        usage = reply.usage()
        assert reply.value is None and reply.attempts == 1 and server.requests == retries + 1
        assert usage.llm_failures == 1 and (usage.llm_http_errors, usage.llm_timeouts) == (
            (1, 0) if outcome == "http" else (0, 1))
