"""The fault suite, round two (issue 21): the doors besides the command line (the served
graphs, the Python API) and what files, factories and numbers can do to them. One test per
defect, on the colour net with a fresh cache folder.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import COLOUR_NET, NAN_NET, line, one_line_error, say, write_config
from tools.errors import LineError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def base(tmp_path):
    return ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", tmp_path / "cache"]


def _served_env(monkeypatch, tmp_path, replies):
    for key, value in {"LINE_MODEL": COLOUR_NET, "LINE_LAYER": "relu", "LINE_CONTROL": "procedural:40",
                       "LINE_CACHE_DIR": str(tmp_path / "cache"), "LINE_RUNS_DIR": str(tmp_path / "runs"),
                       "LINE_LLM__PROVIDER": "scripted", "LINE_LLM__SCRIPT": json.dumps(replies),
                       "LINE_LOOP": json.dumps({"images_per_concept": 2, "init_top": 1, "init_random": 0, "sweep": False,
                                                "bank_top": 0, "max_iterations": 1, "dedup": False, "summary": False,
                                                "confirm_top": 1})}.items():
        monkeypatch.setenv(key, value)


def _with_memory(graph):
    from langgraph.checkpoint.memory import InMemorySaver

    from agent.loop.graph import serializer

    return graph.copy(update={"checkpointer": InMemorySaver(serde=serializer())})


# --- 2 and 11. the served graphs: units checked, a thread keeps its unit, errors say what --------------
def test_served_graphs_check_the_unit_and_keep_the_threads(monkeypatch, tmp_path):
    from langgraph_api.serde import default as serialise

    from line_agent import serve

    _served_env(monkeypatch, tmp_path, [say("red")])
    serve.served_graph.cache_clear()
    try:
        label = _with_memory(serve.served_graph("label"))
        for unit in (-1, 4, 10**9):
            with pytest.raises(serve.ServedError, match=f"unit {unit} is out of range") as raised:
                label.invoke({"unit": unit}, {"configurable": {"thread_id": f"u{unit}"}}, context={})
            assert serialise(raised.value)["message"].startswith(f"unit {unit} is out of range")  # what the client reads

        chat = _with_memory(serve.served_graph("chat"))
        thread = {"configurable": {"thread_id": "t"}}
        chat.invoke({"unit": 0, "messages": [{"role": "user", "content": "/score red"}]}, thread, context={})
        with pytest.raises(serve.ServedError, match="investigates unit 0, not unit 2"):
            chat.invoke({"unit": 2, "messages": [{"role": "user", "content": "/score blue"}]}, thread, context={})
        assert [s.concept for s in chat.get_state(thread).values["steps"]] == ["red"]  # nothing scored for unit 2
    finally:
        serve.served_graph.cache_clear()

    monkeypatch.setenv("LINE_MODEL", "no_such_package.mod:factory")  # a bad setting found at run time: its text
    try:
        with pytest.raises(serve.ServedError, match="no_such_package"):
            _with_memory(serve.served_graph("label")).invoke({"unit": 0}, {"configurable": {"thread_id": "m"}}, context={})
    finally:
        serve.served_graph.cache_clear()


def test_a_server_with_bad_settings_fails_at_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LINE_LOOP": "{not json"}
    done = subprocess.run([sys.executable, "-c", "import line_agent.serve"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "LINE_LOOP" in done.stderr.strip().splitlines()[-1], done.stderr[-600:]


# --- 2 and 16. the Python API: units and types checked, each a LineError with its fix -------------------
PIXELS = dict(input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture
def quick(tmp_path):
    return dict(control="procedural:40", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                images_per_concept=2, sweep=False)


def test_the_python_api_checks_units_and_types(quick, tmp_path):
    import line_agent
    from tests.colour_net import colour_net

    net = colour_net()
    refused = {  # call -> words the one-line error must hold
        lambda: line_agent.score(COLOUR_NET, "relu", "red", unit=-1, **quick): "unit -1 is out of range",
        lambda: line_agent.score(COLOUR_NET, "relu", "red", unit=4, **quick): "unit 4 is out of range",
        lambda: line_agent.score(COLOUR_NET, "relu", "red", unit=10**9, **quick): "out of range",
        lambda: line_agent.score(COLOUR_NET, "relu", "red", unit=1.5, **quick): "unit 1.5 is not a unit number",
        lambda: line_agent.score(COLOUR_NET, "relu", "red", unit=True, **quick): "unit True is not a unit number",
        lambda: line_agent.score(COLOUR_NET, "relu", ["red"], unit=0, **quick): "the concept is a list, not text",
        lambda: line_agent.score(COLOUR_NET, "relu", "red", units=[], **quick): "units= is empty",
        lambda: line_agent.label(COLOUR_NET, "relu", None, **quick): "unit None is not a unit number",
        lambda: line_agent.label(COLOUR_NET, "relu", [0, 7], **quick): "unit 7 is out of range",
        lambda: line_agent.label(COLOUR_NET, "relu", 0, run_id=123, **quick): "run_id=123 is not text",
        lambda: line_agent.label(COLOUR_NET, "relu", 0, chat="gpt", **quick): "chat='gpt' is a str, not a LangChain chat model",
        lambda: line_agent.open_run("r", None): "runs_dir=None is not a folder",
        lambda: line_agent.score(net, "relu", "red", unit=0, **{**PIXELS, "input_size": 0}, **quick): "input_size=0",
        lambda: line_agent.score(net, "relu", "red", unit=0, **{**PIXELS, "input_size": -5}, **quick): "input_size=-5",
        lambda: line_agent.score(net, "relu", "red", unit=0, **{**PIXELS, "input_size": "abc"}, **quick): "input_size='abc'",
        lambda: line_agent.score(net, "relu", "red", unit=0, **{**PIXELS, "std": (0, 0, 0)}, **quick): "std=(0, 0, 0) is not three numbers above 0",
        lambda: line_agent.score(colour_net().to("meta"), "relu", "red", unit=0, **PIXELS, **quick): "meta device",
        lambda: line_agent.score(net, "relu", "red", unit=0, device="meta", **PIXELS, **quick): "meta device",
    }
    for call, words in refused.items():
        with pytest.raises(LineError) as error:
            call()
        assert words in str(error.value) and error.value.fix, (words, str(error.value))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run left behind

    with line_agent.investigate(COLOUR_NET, "relu", 0, chat=line_agent.ScriptedChatModel(replies=["Red."]), **quick) as chat:
        with pytest.raises(LineError, match="a message is text, not a NoneType"):
            chat.ask(None)
        assert chat.ask("/score red").tool_calls[0].ok
    assert line_agent.score(COLOUR_NET, "relu", "red", unit=3.0, **quick).unit == 3  # a whole float is the unit


# --- 13 and 14. devices and model factories: one-line errors naming the value -------------------------
FACTORY = """
import sys
import torch
from tests.colour_net import colour_net
{extra}

def net():
    {body}
    return colour_net()
"""


def test_devices_and_factories_fail_with_one_line(capsys, base, tmp_path):
    for device in ("meta", "hpu"):
        assert one_line_error(*line(capsys, "score", *base, "--unit", "0", "--concept", "red", "--device", device)[::2],
                              f"device {device!r}")
    cases = {  # the factory file's extra module text and body -> words of the error
        ("", "raise RuntimeError('no weights here')"): ["failed", "RuntimeError: no weights here"],
        ("", "sys.exit(0)"): ["failed", "sys.exit(0)"],
        ("def broken(:\n    pass", "pass"): ["SyntaxError", "line"],
        ("input_size = 'abc'", "pass"): ["input_size='abc'"],
        ("input_size = 60000", "pass"): ["input_size=60000"],
        ("mean = 5", "pass"): ["mean=5", "three finite numbers"],
        ("mean = (0.5, 0.5)", "pass"): ["mean=(0.5, 0.5)"],
        ("std = (0, 0, 0)", "pass"): ["std=(0, 0, 0)", "NaN"],
    }
    for i, ((extra, body), words) in enumerate(cases.items()):
        path = tmp_path / f"factory{i}.py"
        path.write_text(FACTORY.format(extra=extra, body=body))
        spec = f"{path}:net"
        argv = ["score", "--model", spec, *base[2:], "--unit", "0", "--concept", "red"]
        code, out, err = line(capsys, *argv)
        assert one_line_error(code, err, *words) and not out, (extra, body, err)
        assert spec in err or str(path) in err, err


# --- 3. cache keys read from files name files inside the cache -------------------------------------------
def test_a_bank_entry_cannot_write_outside_the_cache(capsys, caplog, base, tmp_path):
    assert line(capsys, "score", *base, "--unit", "0", "--concept", "red")[0] == 0  # banks "red"
    [bank] = (tmp_path / "cache" / "banks").glob("*.jsonl")
    escape = "../" * 12 + str(tmp_path).lstrip("/") + "/PWNED"
    with bank.open("a") as handle:
        for key, seed in ((escape, 0), ("ab" * 32, "0"), ("AB" * 32 + "/..", 1)):
            handle.write(json.dumps({"concept": "blue stripes", "images": [
                {"key": key, "prompt": "a photo of blue stripes", "seed": seed, "path": str(tmp_path / "PWNED.png")}]}) + "\n")
    config = write_config(tmp_path / "line.toml", [say("green")], bank_top=3)
    code, out, err = line(capsys, "label", *base, "--config", config, "--runs-dir", tmp_path / "runs", "--unit", "0")
    assert code == 0, err[-800:]
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))
    warnings = [r.getMessage() for r in caplog.records if "concept bank" in r.getMessage()]
    assert len(warnings) == 1 and "3 entries skipped" in warnings[0], warnings

    from PIL import Image

    from tools.cache import DiskCache

    with pytest.raises(LineError, match="is not a cache key"):
        DiskCache(tmp_path / "cache").save_image(escape, Image.new("RGB", (4, 4)))


# --- 6. non-finite activations ------------------------------------------------------------------------
def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"bare {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_units_with_nan_activations_are_named_and_never_labelled(capsys, caplog, base, tmp_path):
    path = tmp_path / "nan_net.py"
    path.write_text(NAN_NET)
    nan = ["--model", f"{path}:net", *base[2:]]
    for argv in (["score", *nan, "--unit", "3", "--concept", "red"],
                 ["label", *nan, "--unit", "3", "--runs-dir", tmp_path / "runs"]):
        assert one_line_error(*line(capsys, *argv)[::2], "unit 3", "NaN or inf"), argv
    import line_agent

    with pytest.raises(LineError, match="unit 3 of layer relu gives NaN or inf"):  # the chat door too
        line_agent.investigate(f"{path}:net", "relu", 3, chat=line_agent.ScriptedChatModel(replies=["?"]),
                               control="procedural:40", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()  # refused before a run or a thread exists

    caplog.clear()
    code, out, err = line(capsys, "score", *nan, "--units", "all", "--concept", "plain red", "--json")
    table = _strict_json(out)
    assert code == 0 and table["nonfinite_units"] == [3] and "units 3 give NaN" in err
    assert table["units"][3]["auc"] is None and table["units"][0]["auc"] > 0.9
    assert not [r for r in caplog.records if "corrupt" in r.getMessage()]  # NaN vectors are kept, not "repaired"

    import numpy as np

    from tools.scoring import Scores, json_ready

    scores = Scores(auc=float("nan"), mad=float("inf"), mean=0.0, u=0.0, p=1.0)  # what history.json is written from
    dumped = _strict_json(json.dumps(json_ready({"scores": scores.model_dump(mode="json"), "per_image": [np.float32("nan")]}),
                                     allow_nan=False))
    assert dumped["scores"]["auc"] is None and dumped["scores"]["mad"] is None and dumped["per_image"] == [None]


# --- 8. sizes and counts have upper bounds --------------------------------------------------------------
def test_sizes_and_counts_have_upper_bounds(capsys, base, tmp_path):
    import line_agent

    for section, key, value in (("generator", "size", 60000), ("loop", "images_per_concept", 1000000),
                                ("loop", "confirm_images", 100000), ("loop", "max_images", 10**12),
                                ("llm", "context", "1e8"), ("generator", "steps", 10**6)):
        config = tmp_path / f"{key}.toml"
        config.write_text(f"[{section}]\n{key} = {value}\n")
        code, out, err = line(capsys, "score", *base, "--unit", "0", "--concept", "red", "--config", config)
        assert one_line_error(code, err, f"{section}.{key}", "less than or equal") and not out, err
    assert one_line_error(*line(capsys, "score", *base, "--unit", "0", "--concept", "red", "--images", "100000")[::2], "256")
    with pytest.raises(LineError, match="from 1 to 256"):
        line_agent.score(COLOUR_NET, "relu", "red", unit=0, images=10**6, control="procedural:40",
                         cache_dir=str(tmp_path / "cache"))


# --- 15. the embedded LLM's file and context ------------------------------------------------------------
def test_a_corrupt_gguf_is_a_one_line_error(capsys, base, tmp_path):
    pytest.importorskip("xllamacpp")
    from agent.llm import default_gguf

    runs = tmp_path / "runs"
    for name, data in (("junk.gguf", b"not a model"), ("cut.gguf", default_gguf().read_bytes()[:4096])):
        (tmp_path / name).write_bytes(data)
        config = tmp_path / f"{name}.toml"
        config.write_text(f"[llm]\nprovider = 'local'\ngguf = '{tmp_path / name}'\n")  # a GGUF of one's own proposes
        code, out, err = line(capsys, "label", *base, "--config", config, "--runs-dir", runs, "--unit", "0")
        assert one_line_error(code, err, "llm.gguf", name), err[-600:]
    assert not runs.exists()  # a failed start leaves no run behind


# --- 18. control folders: enough different images, none too large to decode -------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG file that says it is `width` x `height` (only its header: never decoded here)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_control_folders_need_eight_different_images_and_skip_huge_ones(capsys, caplog, base, tmp_path):
    import warnings

    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / name)
    argv = ["score", *base[:4], "--control", f"dir:{folder}", *base[6:], "--unit", "0", "--concept", "red"]
    assert one_line_error(*line(capsys, *argv)[::2], "1 different readable image(s) (2 files)", "at least 8")

    for i in range(8):
        Image.new("RGB", (32, 32), (20 * i, 255 - 20 * i, 40)).save(folder / f"c{i}.png")
    (folder / "huge.png").write_bytes(_png_header(12000, 12000))  # 144 megapixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's raw warning would fail here
        code, out, err = line(capsys, *argv, "--json")
    assert code == 0 and json.loads(out)["control"].startswith(f"dir:{folder} (10 images"), err
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "huge.png (12000x12000 pixels, over 64 megapixels)" in skipped[0], skipped


# --- 4. concept length limits at every door --------------------------------------------------------------
def test_overlong_concepts_are_never_scored(settings, tmp_path, caplog):
    from tests.helpers import run_units, with_loop
    from tools.concepts import MAX_CONCEPT_CHARS

    long_answer = "red " * 2500  # 10,000 characters
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("x" * 25_000 + "\nplain red\n")
    settings = with_loop(settings, max_iterations=2, sweep=True, sweep_concepts=str(sweep), sweep_top=2, init_top=1,
                         init_random=0, summary=False, search_when="always")  # the LLM's answers must be asked for
    run, _, states = run_units(settings, [say(long_answer), long_answer, say("x" * 25_000), "green " * 2000])
    steps = states[0].steps
    assert steps and all(len(s.concept) <= MAX_CONCEPT_CHARS for s in steps)
    assert [a.concept for a in states[0].sweep] == ["plain red"]
    refused = [e for e in states[0].events if e.kind == "undrawable"]
    assert refused and all("characters long" in e.reason or "words long" in e.reason for e in refused), refused
    assert any("loop.sweep_concepts: 1 of 2 concepts skipped" in r.getMessage() for r in caplog.records)
    from agent.runs.engine_factory import build_engine

    assert all(len(c) <= MAX_CONCEPT_CHARS for c in build_engine(settings).bank())


# --- found re-running the probes (issue 21's closing note) ------------------------------------------------
def test_a_run_read_from_python_checks_the_unit_it_is_asked_for(quick, tmp_path):
    import line_agent

    chat = line_agent.ScriptedChatModel(replies=[say("red background")] * 4)
    run = line_agent.label(COLOUR_NET, "relu", 0, chat=chat, init_top=1, init_random=0, bank_top=0, max_iterations=0,
                           dedup=False, summary=False, run_id="r", **quick)
    run = line_agent.open_run("r", quick["runs_dir"])
    for call in (lambda: run.label("0"), lambda: run.history(True), lambda: run.report("0")):
        with pytest.raises(LineError) as caught:  # was: "unit 0 has no history (units started: 0)", or unit 1's
            call()
        assert "is not a unit number" in str(caught.value) and "units started" not in str(caught.value)
    assert run.label(0.0).unit == 0 and run.report(0).name == "unit-0.html"
