"""The report page of a network run: one row per layer, a search over every unit's label
(data embedded as JSON, safe from labels that hold HTML), links to the layers' reports."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from agent.config import load_settings
from agent.llm import ScriptedChatModel
from agent.runs.network import start_network
from agent.ui import report
from agent.ui.network_report import common_words, layer_row, script_json
from tests.helpers import COLOUR_NET, say

CONCEPTS = [f"{c} {p}" for c in ("red", "green", "blue", "yellow") for p in ("stripes", "grid", "waves", "dots")]
EVIL = "</script><script>alert(1)</script><!-- & \u2028"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    root = tmp_path_factory.mktemp("network-report")
    settings = load_settings(
        model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(root / "cache"),
        runs_dir=str(root / "runs"),
        loop={"images_per_concept": 2, "init_top": 1, "init_random": 0, "sweep": False, "bank_top": 0,
              "max_iterations": 2, "dedup": False, "summary": False})
    run, contexts, _ = start_network(settings, "features,relu", "0-1", "net",
                                     chat=ScriptedChatModel(replies=[say(c) for c in CONCEPTS]))
    run.label(contexts)
    return run


@pytest.fixture(scope="module")
def page(network) -> Path:
    return report.write_network_report(network)


class Page(HTMLParser):
    """The links, the layer rows' text and the embedded JSON of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[str] = []
        self.layers: dict[str, str] = {}
        self.data = ""
        self._layer: str | None = None
        self._in_data = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        self._layer = attrs.get("data-layer", self._layer) if tag == "tr" else self._layer
        self._in_data = tag == "script" and attrs.get("id") == "unit-data"

    def handle_endtag(self, tag):
        if tag == "tr":
            self._layer = None
        self._in_data = False

    def handle_data(self, data):
        if self._layer is not None:
            self.layers[self._layer] = self.layers.get(self._layer, "") + data
        if self._in_data:
            self.data += data


def test_the_page_lists_each_layer_with_its_counts_and_a_link_to_its_report(network, page):
    assert page == network.folder / "report" / "index.html"
    parsed = Page(page.read_text(encoding="utf-8"))
    assert list(parsed.layers) == ["features", "relu"]
    for layer, states in network.states().items():
        labelled = [s for s in states.values() if s.label is not None]
        judged = [s.label.explained for s in labelled if s.label.explained is not None]
        text = " ".join(parsed.layers[layer].split())
        assert f"{len(labelled)} / 2" in text
        assert (f"explained {sum(judged)} of {len(judged)} judged" if judged else "none judged") in text
        assert f"../layers/{layer}/report/index.html" in parsed.links
    for link in parsed.links:
        assert (page.parent / unquote(link)).is_file(), link  # every link leads to a file written


def test_every_units_label_is_in_the_search_data_with_a_link_to_its_page(network, page):
    units = json.loads(Page(page.read_text(encoding="utf-8")).data)
    states = network.states()
    assert {(u["layer"], u["unit"]) for u in units} == {(l, u) for l in states for u in states[l]}
    for unit in units:
        state = states[unit["layer"]][unit["unit"]]
        assert unit["label"] == state.label.concept and unit["source"] == state.label_source()
        assert (page.parent / unquote(unit["link"])).is_file()
    assert "layers/relu/report/unit-1.html" in {u["link"].removeprefix("../") for u in units}


def test_the_page_needs_nothing_from_the_network(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "<script src" not in text


def test_a_label_with_html_cannot_leave_the_json_element(network, monkeypatch):
    states = network.states()
    state = states["relu"][0]
    states["relu"][0] = state.model_copy(update={"label": state.label.model_copy(update={"concept": EVIL})})
    monkeypatch.setattr(network, "states", lambda: states)
    text = report.network_page(network, {"features": "../f/", "relu": "../r/"})
    assert "<script>alert" not in text and "<!--" not in text
    assert text.count("</script>") == 2  # the JSON element's and the search script's own
    units = json.loads(Page(text).data)
    assert EVIL in [u["label"] for u in units]  # read back as written


def test_script_json_escapes_what_html_would_read():
    text = str(script_json({"label": EVIL}))
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == {"label": EVIL}


def test_common_words_leave_out_stop_words():
    labels = ["red stripes on black background", "red grid", "the red-green waves", "Blue STRIPES"]
    assert common_words(labels, 3) == [("red", 2), ("stripes", 2), ("black", 1)]


def test_a_layer_row_counts_units_without_a_verdict_as_not_judged(network):
    states = dict(network.states()["relu"])
    first, second = (states[u] for u in (0, 1))
    states[0] = first.model_copy(update={"label": first.label.model_copy(update={"explained": True})})
    states[1] = second.model_copy(update={"label": second.label.model_copy(update={"explained": None})})
    states[2] = second.model_copy(update={"unit": 2, "label": None})  # still labelling
    row = layer_row("relu", states, 4, "../r/")
    assert (row["labelled"], row["explained"], row["judged"], row["size"]) == (2, 1, 1, 4)
    assert row["mean_auc"] == pytest.approx((first.label.scores.auc + second.label.scores.auc) / 2)
    assert row["link"] == "../r/index.html" and row["vocabulary"] == 0
