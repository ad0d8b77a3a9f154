"""`line_agent`, the Python API, on the colour net in memory (unit 0 = redness, 2 = blueness):
scores, labels, runs, conversations, keyword settings and the displays in Jupyter."""

import json
import re

import pytest
import torch
from langchain_core.messages import AIMessage

import line_agent
from agent.runs import context as run_context
from agent.ui.cli import main as line
from tests.colour_net import colour_net
from tests.helpers import say

PIXELS = dict(input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
REPLIES = [say("red background"), say("blue stripes"), say("red squares"), say("green circles")]


@pytest.fixture(autouse=True)
def no_text_encoder(monkeypatch):
    """Dedup by words and scene only: loading the sentence encoder would cost seconds per test."""
    monkeypatch.setattr(run_context, "default_embedder", lambda: None)


@pytest.fixture
def quick(tmp_path):
    return dict(PIXELS, control="procedural:40", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                images_per_concept=3)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Units 0 and 2 of the colour net, labelled in memory by a scripted LLM."""
    root = tmp_path_factory.mktemp("api")
    net = colour_net()
    run = line_agent.label(net, net.relu, [0, 2], chat=line_agent.ScriptedChatModel(replies=REPLIES),
                           control="procedural:40", cache_dir=str(root / "cache"), runs_dir=str(root / "runs"),
                           loop={"images_per_concept": 3, "sweep": False, "bank_top": 0, "dedup": False},
                           max_iterations=3, **PIXELS)
    return net, run, root


def test_score_on_a_live_module_knows_its_weights(quick):
    net = colour_net()
    red = line_agent.score(net, "relu", "red background", unit=0, **quick)
    assert isinstance(red.auc, float) and red.auc > 0.9 and isinstance(red.mad, float) and isinstance(red.p, float)
    assert len(red.activations) == len(red.images) == 3
    again = line_agent.score(net, net.relu, "red background", unit=0, **quick)  # the layer as the submodule
    assert (again.model, again.auc) == (red.model, red.auc)
    with torch.no_grad():
        net.features.weight.mul_(-1)  # unit 0 now fires on everything but red
    flipped = line_agent.score(net, "relu", "red background", unit=0, **quick)
    assert flipped.model != red.model and flipped.auc < 0.5


def test_score_of_several_units_is_a_table(quick):
    table = line_agent.score(colour_net(), "relu", "blue background", **quick)
    assert [row.unit for row in table] == [0, 1, 2, 3] and table.top(1)[0].unit == 2
    frame = table.to_pandas()
    assert list(frame.index) == [0, 1, 2, 3] and frame.loc[2, "auc"] == table.unit(2).auc
    assert [row.unit for row in line_agent.score(colour_net(), "relu", "blue background", units="1-2", **quick)] == [1, 2]
    html = table._repr_html_()
    assert html.startswith('<div class="line-agent">') and html.count("<tr>") == 5 and "data:image/jpeg;base64," in html


def test_keyword_settings_override_the_config_and_unknown_keys_are_errors(quick, tmp_path):
    config = tmp_path / "line.toml"
    config.write_text('control = "procedural:20"\n[loop]\nmax_iterations = 7\npatience = 2\n')
    setup = line_agent.api.Setup.of(colour_net(), "relu", config, {**quick, "max_iterations": 2, "llm": {"provider": "scripted"}})
    loop = setup.settings.loop
    assert (loop.max_iterations, loop.patience, loop.images_per_concept) == (2, 2, 3)
    assert (setup.settings.control, setup.settings.llm.provider) == ("procedural:40", "scripted")
    with pytest.raises(line_agent.LineError, match=r"unknown setting 'max_iteration' \(did you mean max_iterations\?\)"):
        line_agent.score(colour_net(), "relu", "red", unit=0, max_iteration=2, **quick)
    with pytest.raises(line_agent.LineError, match="input_size= apply to a torch module"):
        line_agent.score("tests.colour_net:colour_net", "relu", "red", unit=0, input_size=64)
    with pytest.raises(line_agent.LineError, match="needs preprocess="):
        line_agent.score(colour_net(), "relu", "red", unit=0, control="procedural:40")
    with pytest.raises(line_agent.LineError, match="not a submodule of the model"):
        line_agent.score(colour_net(), torch.nn.ReLU(), "red", unit=0, **quick)
    with pytest.raises(line_agent.LineError, match="out of range"):
        line_agent.score(colour_net(), "relu", "red", unit=4, **quick)


def test_a_run_lists_labels_histories_and_a_table(labelled):
    _, run, _ = labelled
    labels = run.labels
    assert [(l.unit, l.finished) for l in labels] == [(0, True), (2, True)]
    red, blue = labels
    assert "red" in red.concept and red.auc > 0.9 and isinstance(red.mad, float)
    assert blue.concept != red.concept and blue.auc > 0.8
    assert red.runners_up and red.reason and red.finalists and isinstance(red.polysemantic, bool)
    assert run.history(0).label.concept == red.concept
    frame = run.to_pandas()
    assert list(frame.index) == [0, 2] and frame.loc[0, "label"] == red.concept
    with pytest.raises(line_agent.LineError, match="units started: 0, 2"):
        run.history(1)


def test_labels_and_runs_display_themselves_with_the_reports_templates(labelled):
    _, run, _ = labelled
    label_html = run.labels[0]._repr_html_()
    assert label_html.startswith('<div class="line-agent">') and "How the label was chosen" in label_html
    assert run.labels[0].reason.split(":")[0] in label_html  # why the winner won
    assert "fresh images" in label_html and label_html.count("data:image/jpeg;base64,") >= 10
    assert not re.search(r"(?m)^\s*body\s*\{", label_html)  # the report's styles are scoped to the fragment
    run_html = run._repr_html_()
    assert run_html.count('<tr data-unit="') == 2 and f"{run.folder.name}/report/unit-0.html" in run_html
    page = run.report(0)
    assert page.name == "unit-0.html" and run.labels[0].concept in page.read_text()


def test_open_run_reads_it_and_resumes_only_with_the_same_module(labelled):
    net, run, root = labelled
    opened = line_agent.open_run(run.id, root / "runs")
    assert [(l.unit, l.concept) for l in opened.labels] == [(l.unit, l.concept) for l in run.labels]
    with pytest.raises(line_agent.LineError, match="Pass it again"):
        opened.resume()
    other = colour_net()
    with torch.no_grad():
        other.features.bias.add_(0.1)
    with pytest.raises(line_agent.LineError, match="is not the one run"):
        line_agent.open_run(run.id, root / "runs", model=other, **PIXELS)
    again = line_agent.open_run(run.id, root / "runs", model=net, **PIXELS).resume()
    assert [l.concept for l in again.labels] == [l.concept for l in run.labels]


def test_a_conversation_answers_with_its_tool_calls_and_the_cli_reads_its_history(quick, capsys):
    call = AIMessage("", tool_calls=[{"name": "score_concept", "args": {"concept": "red background"}, "id": "call-1"}])
    chat_llm = line_agent.ScriptedChatModel(replies=[call, "Unit 0 responds to red."])
    with line_agent.investigate(colour_net(), "relu", 0, chat=chat_llm, provider="scripted", dedup=False, **quick) as chat:
        answer = chat.ask("What does unit 0 respond to?")
        assert str(answer).startswith('Unit 0 responds to red.\nBest so far: "red background" (MAD ')  # the graph's check adds the score
        assert [(c.name, c.args, c.ok) for c in answer.tool_calls] == [("score_concept", {"concept": "red background"}, True)]
        assert "AUC" in answer.tool_calls[0].result
        slash = chat.ask("/score blue background")
        assert slash.tool_calls[0].name == "score_concept" and slash.text == ""
        history = chat.history()
    assert [(s.concept, s.source) for s in history.steps] == [("red background", "llm"), ("blue background", "user")]
    capsys.readouterr()
    assert line(["history", chat.id, "--unit", "0", "--runs-dir", quick["runs_dir"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == history.model_dump(mode="json")


def test_a_run_on_a_model_spec_is_read_untrusted_and_resumed(quick):
    run = line_agent.label("tests.colour_net:colour_net", "relu", [0], chat=line_agent.ScriptedChatModel(replies=REPLIES),
                           max_iterations=1, sweep=False, dedup=False, **{k: v for k, v in quick.items() if k not in PIXELS})
    opened = line_agent.open_run(run.id, quick["runs_dir"])  # a run folder is data: its model is not imported
    assert opened.labels[0].concept == run.labels[0].concept and "AUC" in opened.labels[0]._repr_html_()
    with pytest.raises(line_agent.LineError, match="cannot change what the run scores"):
        opened.resume(control="procedural:20")
    assert opened.resume(cache_dir=quick["cache_dir"]).labels[0].concept == run.labels[0].concept
