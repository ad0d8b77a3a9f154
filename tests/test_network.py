"""Several layers as one run (agent.runs.network): every unit of every layer labelled, Ctrl-C
and resume without a scored step repeated, `line label --layers` with globs, `line history
--layer`, and labels.csv beside every history.json."""

import csv
import io
import json

import pytest

from agent.llm import ScriptedChatModel
from agent.runs.labels_csv import COLUMNS, labels_csv
from agent.runs.network import NetworkRun, layer_name, network_contexts, open_run, start_network
from agent.runs.run import RUN_ID, Run
from tests.helpers import COLOUR_NET, line, one_line_error, run_units, say, with_loop, write_config
from tools.errors import LineError

CONCEPTS = [f"{c} {p}" for c in ("red", "green", "blue", "yellow") for p in ("stripes", "grid", "waves", "dots")]


@pytest.fixture
def quick(settings):
    return with_loop(settings, images_per_concept=2, init_top=1, init_random=0, max_iterations=2, dedup=False,
                     summary=False)


def _scored(states) -> dict:
    """(layer, unit) -> its scored steps, as (iteration, concept, source)."""
    return {(layer, unit): [(s.iteration, s.concept, s.source) for s in state.steps]
            for layer, units in states.items() for unit, state in units.items()}


def _rows(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_two_layers_interrupted_then_resumed_label_every_unit_scoring_no_step_twice(quick):
    chat = ScriptedChatModel(replies=[say(c) for c in CONCEPTS])
    run, contexts, engines = start_network(quick, "features,relu", "all", "net", chat=chat)
    assert len({id(engine.model) for engine in engines.values()}) == 1  # one model for both layers
    updates = []

    def stop_in_the_second_layer(layer, unit, node, state):
        updates.append((layer, unit, node))
        if layer == "relu" and unit == 1 and node != "init":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.label(contexts, on_update=stop_in_the_second_layer)
    saved = _scored(open_run("net", quick.runs_dir).states())
    assert ("relu", 1) in saved and ("relu", 3) not in saved  # stopped mid-layer

    again = open_run("net", quick.runs_dir)
    assert isinstance(again, NetworkRun) and again.layers == ["features", "relu"]
    with pytest.raises(LineError, match="several layers"):  # a door that knows one layer says so
        Run.open("net", quick.runs_dir)
    contexts, _ = network_contexts(again, chat=ScriptedChatModel(replies=[say(c) for c in reversed(CONCEPTS)]))
    final = again.label(contexts)
    assert {layer: sorted(states) for layer, states in final.items()} == {"features": [0, 1, 2, 3], "relu": [0, 1, 2, 3]}
    assert all(state.label is not None for states in final.values() for state in states.values())
    done = _scored(final)
    for key, steps in saved.items():
        assert done[key][: len(steps)] == steps, key  # what was scored stays, and is not scored again
        assert len({concept for _, concept, _ in done[key]}) == len(done[key]), key

    history = json.loads((again.folder / "history.json").read_text())
    assert history["run"] == "net" and list(history["layers"]) == ["features", "relu"]
    assert set(history["layers"]["relu"]["units"]) == {"0", "1", "2", "3"}
    rows = _rows(again.folder / "labels.csv")
    assert [(r["layer"], r["unit"]) for r in rows] == [(l, str(u)) for l in ("features", "relu") for u in range(4)]
    relu_0 = final["relu"][0]
    assert rows[4]["label"] == relu_0.label.concept and float(rows[4]["auc"]) == pytest.approx(relu_0.label.scores.auc, abs=1e-4)
    assert (again.folder / "layers" / "relu" / "labels.csv").is_file()


def test_labels_csv_of_a_run_of_one_layer(quick):
    run, _, states = run_units(quick, [say(c) for c in CONCEPTS], units=(0, 2))
    rows = _rows(run.folder / "labels.csv")
    assert tuple(rows[0]) == COLUMNS and [r["unit"] for r in rows] == ["0", "2"]
    for row, unit in zip(rows, (0, 2)):
        label = states[unit].label
        assert row["layer"] == "relu" and row["label"] == label.concept
        assert float(row["mad"]) == pytest.approx(label.scores.mad, abs=1e-4)
        assert row["explained"] == ("" if label.explained is None else str(label.explained).lower())
        assert row["source"] == states[unit].step(label.concept).source
        assert row["source"] in ("init", "sweep", "bank", "llm", "operator", "summary")


def test_labels_csv_quotes_labels_and_defuses_formulas(quick):
    _, _, states = run_units(quick, [say("red stripes")], units=(0,))
    state = states[0]
    tricky = state.model_copy(update={"label": state.label.model_copy(update={"concept": '=HYPERLINK("x"), "red"\nstripes'})})
    rows = list(csv.reader(io.StringIO(labels_csv("relu", [tricky]).decode())))
    assert rows[1][2] == '\'=HYPERLINK("x"), "red"\nstripes'  # one cell, quoted, no formula
    assert rows[1][6] == ""  # no step of that concept: its source is unknown


def test_cli_layers_glob_history_layer_and_resume(capsys, tmp_path):
    config = write_config(tmp_path / "line.toml", [say(c) for c in CONCEPTS], sweep=False)
    runs = str(tmp_path / "runs")
    base = ["--model", COLOUR_NET, "--control", "procedural:40", "--cache-dir", tmp_path / "c", "--runs-dir", runs,
            "--config", config]
    code, out, err = line(capsys, "label", *base, "--layers", "*", "--units", "0", "--run-id", "glob")
    assert code == 0, err
    assert "labels of features" in out and "labels of head" in out
    assert "layer relu unit 0: finalize" in err  # the progress names the layer (plain lines without a terminal)
    history = json.loads((tmp_path / "runs" / "glob" / "history.json").read_text())
    assert list(history["layers"]) == ["features", "relu", "head"]  # every top-level module, in the model's order
    assert [r["layer"] for r in _rows(tmp_path / "runs" / "glob" / "labels.csv")] == ["features", "relu", "head"]

    code, out, _ = line(capsys, "history", "glob", "--layer", "relu", "--unit", "0", "--runs-dir", runs)
    assert code == 0 and "layer relu" in out and "label:" in out
    code, _, err = line(capsys, "history", "glob", "--unit", "0", "--runs-dir", runs)
    assert one_line_error(code, err, "--layer", "features, relu, head")
    code, _, err = line(capsys, "history", "glob", "--layer", "nope", "--unit", "0", "--runs-dir", runs)
    assert one_line_error(code, err, "'nope'", "features, relu, head")

    code, out, _ = line(capsys, "label", "--resume", "glob", "--runs-dir", runs)
    assert code == 0 and "labels of relu" in out  # nothing left: finished units are not labelled again
    code, _, err = line(capsys, "label", "--resume", "glob", "--runs-dir", runs, "--units", "0-1")
    assert one_line_error(code, err, "units of features")
    code, out, _ = line(capsys, "report", "glob", "--runs-dir", runs)
    index = (tmp_path / "runs" / "glob" / "report" / "index.html").read_text()
    assert code == 0 and "layers/relu/report/index.html" in index


@pytest.mark.parametrize("layers, words", [
    ("featurez", ["'featurez'", "line layers"]),
    ("x.*", ["'x.*'", "matches no layer"]),
    (",", ["no layers"]),
])
def test_bad_layers_is_one_clear_line_and_makes_no_run(capsys, tmp_path, layers, words):
    runs = tmp_path / "runs"
    code, _, err = line(capsys, "label", "--model", COLOUR_NET, "--control", "procedural:40", "--cache-dir", tmp_path / "c",
                        "--runs-dir", runs, "--layers", layers)
    assert one_line_error(code, err, *words)
    assert not runs.exists() or not any(runs.iterdir())


def test_a_layer_named_unlike_a_folder_gets_a_safe_distinct_one():
    assert layer_name("_blocks.1") == "_blocks.1"
    odd = [layer_name(name) for name in ("a/b", "a b", "../up", ".hidden")]
    assert len(set(odd)) == 4 and all(RUN_ID.fullmatch("run--" + name) and "/" not in name for name in odd)


def test_layer_and_layers_exclude_each_other(capsys, tmp_path):
    code, _, err = line(capsys, "label", "--model", COLOUR_NET, "--layer", "relu", "--layers", "relu")
    assert one_line_error(code, err, "--layer and --layers")


def test_python_api_labels_layers_of_a_module_in_memory(tmp_path):
    import line_agent
    from tests.colour_net import colour_net

    net = colour_net()
    keywords = dict(input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), control="procedural:40",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                    loop={"images_per_concept": 2, "init_top": 1, "init_random": 0, "sweep": False, "bank_top": 0,
                          "dedup": False, "summary": False, "max_iterations": 2})
    run = line_agent.label(net, layers=[net.features, "relu"], units=[0, 1], run_id="api-net",
                           chat=line_agent.ScriptedChatModel(replies=[say(c) for c in CONCEPTS]), **keywords)
    assert isinstance(run, line_agent.NetworkLabelRun) and run.layers == ["features", "relu"]
    assert {layer: [label.unit for label in labels] for layer, labels in run.labels.items()} == {"features": [0, 1],
                                                                                                "relu": [0, 1]}
    assert list(run.to_pandas().index) == [("features", 0), ("features", 1), ("relu", 0), ("relu", 1)]
    opened = line_agent.open_run("api-net", tmp_path / "runs", model=net, input_size=64,
                                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert opened.layer("relu").history(1).label is not None
    assert opened.resume().labels["relu"][0].concept == run.labels["relu"][0].concept  # finished: nothing scored again
    with pytest.raises(line_agent.LineError, match="not in run api-net"):
        opened.layer("head")
    with pytest.raises(line_agent.LineError, match="layer= and layers= exclude each other"):
        line_agent.label(net, "relu", [0], layers=["relu"], **keywords)


def test_a_network_run_on_ray_workers_with_a_shared_store(ray_cluster, postgres_url, tmp_path):
    """Each layer's units go to Ray workers; in a Postgres store the layers' runs are told
    apart by their ids (`<id>--<layer>`), the workers' checkpoints included."""
    from agent.config import load_settings

    settings = load_settings(model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(tmp_path / "cache"),
                             runs_dir=str(tmp_path / "runs"), llm={"provider": "scripted", "script": [say(c) for c in CONCEPTS]},
                             loop={"images_per_concept": 2, "init_top": 1, "init_random": 0, "sweep": False,
                                   "bank_top": 0, "max_iterations": 2, "summary": False, "dedup": False},
                             cluster={"backend": "ray", "workers": 1}, store={"url": postgres_url})
    run, contexts, _ = start_network(settings, ["features", "relu"], "0", "ray-net")
    assert contexts == {"features": None, "relu": None}  # the workers build their own
    states = run.label(contexts)
    assert all(states[layer][0].label is not None for layer in ("features", "relu"))
    again = open_run("ray-net", tmp_path / "runs")
    assert [child.id for child in again.children.values()] == ["ray-net--features", "ray-net--relu"]
    assert {layer: sorted(units) for layer, units in again.states().items()} == {"features": [0], "relu": [0]}
    assert all(child.store.units()[0].status == "done" for child in again.children.values())


def test_the_layers_share_one_forward_for_the_control_set_and_the_sweep(quick, tmp_path, monkeypatch):
    """A network run prepares its layers together: the sweep's images render once, and the
    control set and the sweep go through the model once for both layers."""
    monkeypatch.delenv("LINE_SHARED_DATA", raising=False)  # no natural photos: the next test has them
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("plain red\nplain green\nblue stripes\nyellow dots\n")
    settings = with_loop(quick, sweep=True, sweep_concepts=str(vocabulary))
    run, contexts, engines = start_network(settings, "features,relu", "0,1", "shared",
                                           chat=ScriptedChatModel(replies=[say(c) for c in CONCEPTS]))
    run.label(contexts)
    shared = json.loads((run.folder / "sweep.json").read_text())
    # the control set went through the model at the start (checking the units), the sweep here
    assert shared["layers"] == 2 and shared["images_rendered"] == 4 * 2 and shared["images_forwarded"] == 4 * 2
    for layer in ("features", "relu"):  # each layer's own sweep found everything rendered and forwarded
        assert json.loads((run.folder / "layers" / layer / "sweep.json").read_text())["images_rendered"] == 0


def test_the_verdicts_natural_photos_go_through_the_model_once_for_all_layers(quick, tmp_path, monkeypatch):
    """With LINE_SHARED_DATA naming ImageNet samples, a network run forwards the verdict's
    photos (every NATURAL_EVERY-th) with the sweep, once for both layers, and every label's
    verdict is judged against them."""
    import numpy as np
    from PIL import Image

    from tools.verdict import NATURAL_EVERY

    photos = tmp_path / "shared" / "imagenet-samples"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photos / f"n{i:08d}_thing{i}.png")
    monkeypatch.setenv("LINE_SHARED_DATA", str(tmp_path / "shared"))
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("plain red\nplain green\n")
    settings = with_loop(quick, sweep=True, sweep_concepts=str(vocabulary))
    run, contexts, _ = start_network(settings, "features,relu", "0", "natural",
                                     chat=ScriptedChatModel(replies=[say(c) for c in CONCEPTS]))
    states = run.label(contexts)
    shared = json.loads((run.folder / "sweep.json").read_text())
    assert shared["images_forwarded"] == 2 * 2 + 12 // NATURAL_EVERY  # the sweep's images and the photos
    for layer in ("features", "relu"):
        confidence = states[layer][0].label.confidence
        assert confidence.natural is not None and confidence.natural.controls == 12 // NATURAL_EVERY
