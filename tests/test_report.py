"""The HTML report of a small run on the colour net: pages, links, inline images, sections, CLI."""

import re
from markupsafe import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from agent.ui import report
from agent.ui.cli import build_parser
from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from agent.llm import ScriptedChatModel
from agent.runs.run import Run
from agent.runs.context import build_context
from tests.helpers import COLOUR_NET
from tests.helpers import say
from tools.errors import LineError
from tools.history import Event
from tools.polysemantic import analyse

UNITS = [0, 2]
REPLIES = [say("red background", "red scores highest so far"), say("red backgrounds"), say("blue stripes"),
           say("green circles"), say("red squares"), say("white noise"), say("red on black")]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("report")
    settings = load_settings(
        model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(root / "cache"),
        runs_dir=str(root / "runs"),
        loop={"images_per_concept": 3, "init_top": 2, "init_random": 1, "sweep": False, "bank_top": 0,
              "max_iterations": 5, "patience": 2})
    run = Run.create(settings, UNITS, "demo")
    run.label(build_context(settings, build_engine(settings), chat=ScriptedChatModel(replies=REPLIES)))
    return run


@pytest.fixture(scope="module")
def index(run) -> Path:
    return report.write_report(run)


class Tags(HTMLParser):
    """Every tag's attributes, by tag name."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: dict[str, list[dict]] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.setdefault(tag, []).append(dict(attrs))


def test_every_unit_has_a_page_linked_from_the_index(run, index):
    assert index == run.folder / "report" / "index.html"
    links = {a["href"] for a in Tags(index.read_text()).tags["a"]}
    for unit in UNITS:
        page = index.parent / f"unit-{unit}.html"
        assert f"unit-{unit}.html" in links and page.is_file()
        assert f'data-unit="{unit}"' in page.read_text()


def test_images_are_inline_or_beside_and_nothing_comes_from_the_network(index):
    pages = sorted(index.parent.glob("*.html"))
    for page in pages:
        text = page.read_text()
        tags = Tags(text).tags
        images = [img["src"] for img in tags["img"]]
        assert images and all(src.startswith("data:image/") or (page.parent / src).is_file() for src in images)
        assert not re.search(r"https?://", text), page.name
        assert not any("src" in s for s in tags.get("script", [])) and "link" not in tags


def test_a_unit_page_shows_label_evidence_curve_pool_reasoning_events_and_cost(index):
    text = (index.parent / "unit-0.html").read_text()
    for words in ("red background", "Evidence", "control images it fires on least", "Meanings in the history",
                  "<svg", "<polyline", "Final pool", "red scores highest so far", "duplicate", "strategy",
                  "images rendered", "LLM calls", "How the label was chosen", "fresh images", "why a finalist"):
        assert words in text, words
    assert "Ablation" not in text
    label = run_states_label(index)
    assert escape(label.reason) in text  # why the winner won


def run_states_label(index):
    return Run.open(index.parent.parent.name, index.parent.parent.parent).states()[0].label


def test_ablation_records_show_when_present(run):
    state = run.states()[0]
    ablation = Event(iteration=3, kind="ablation", concept="red background",
                     detail="unit 0, scene 'a room': drop 2.9 ± 0.1, AUC 1.000 -> 0.310; removed")
    state = state.model_copy(update={"events": [*state.events, ablation]})
    rep = report.Report.of(run)
    text = report.unit_page(rep, rep.view(state))
    assert "Ablation" in text and "AUC 1.000 -&gt; 0.310; removed" in text


def test_text_from_the_llm_and_the_history_is_escaped(run):
    state = run.states()[0]
    step = state.steps[-1].model_copy(update={"reasoning": "<script>alert(1)</script> & more"})
    odd = Event(iteration=9, kind="review", concept='"><img src=x onerror=alert(1)>', detail="a <b>bold</b> claim")
    state = state.model_copy(update={"steps": [*state.steps[:-1], step], "events": [*state.events, odd]})
    rep = report.Report.of(run)
    page = report.unit_page(rep, rep.view(state))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<img src=x" not in page and "a &lt;b&gt;bold&lt;/b&gt; claim" in page
    assert len(Tags(page).tags.get("script", [])) == 0


def test_a_unit_with_nothing_scored_yet_has_a_page_and_a_row(run):
    from agent.loop.state import NeuronState

    rep = report.Report.of(run)
    state = NeuronState(unit=5)
    view = rep.view(state)
    assert "No concept scored yet" in report.unit_page(rep, view)
    row = report.index_row(rep, view)
    assert 'data-unit="5" data-auc="0.0"' in row and "<img" not in row


def test_a_polysemantic_unit_is_flagged_with_its_groups(run):
    rep = report.Report.of(run)
    state = run.states()[0]
    poly = analyse(state.steps, rep.embedder, score_threshold=0.2, distinct_below=0.95)
    assert poly.polysemantic
    view = rep.view(state, poly)
    page = report.unit_page(rep, view)
    assert "polysemantic" in page and all(sense in page for sense in poly.senses)
    assert 'data-poly="1"' in report.index_row(rep, view)


def test_report_command_one_unit_open_and_errors(run, index, monkeypatch, capsys):
    parser = build_parser()
    opened = []
    monkeypatch.setattr(report.webbrowser, "open", opened.append)
    runs_dir = str(run.folder.parent)
    args = parser.parse_args(["report", "demo", "--unit", "2", "--open", "--runs-dir", runs_dir])
    args.func(args)
    page = run.folder / "report" / "unit-2.html"
    assert str(page) in capsys.readouterr().out and opened == [page.resolve().as_uri()]
    with pytest.raises(LineError, match="unit 7 has no history"):
        args = parser.parse_args(["report", "demo", "--unit", "7", "--runs-dir", runs_dir])
        args.func(args)
    with pytest.raises(LineError, match="does not exist"):
        args = parser.parse_args(["report", "nope", "--runs-dir", runs_dir])
        args.func(args)


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(run, index, tmp_path):
    from PIL import Image

    from evals import report_screenshot

    if not report_screenshot.CHROMIUM.exists():
        pytest.skip(f"{report_screenshot.CHROMIUM} is absent (apt-get install chromium)")
    results = report_screenshot.check(index.parent, UNITS)
    assert {r["page"] for r in results} == {"index.html", *(f"unit-{u}.html" for u in UNITS)}
    assert all(r["ok"] for r in results), results
    png = report_screenshot.screenshot(index.parent / "unit-0.html", tmp_path / "unit-0.png")
    assert Image.open(png).size == (1200, 1600)


# --- where the unit fires (issue 23, item 4) ---------------------------------------------------------
def test_evidence_images_carry_the_units_activation_map_on_one_scale(run, index):
    assert 'class="overlay"' not in (index.parent / "unit-0.html").read_text()  # untrusted: the model may not run
    text = report.write_report(run, unit=0, trust=True).read_text()
    tags = Tags(text).tags
    overlays = [img for img in tags["img"] if img.get("class") == "overlay"]
    plain = [img for img in tags["img"] if img.get("class") != "overlay"]
    assert overlays and all(img["src"].startswith("data:image/jpeg;base64,") for img in overlays)
    assert len(overlays) == len(plain)  # a conv layer: every evidence image shows where the unit fires
    scale = re.search(r"dark red to yellow from 0 to ([0-9.e+-]+) \(one scale for every image of this unit", text)
    assert scale and float(scale.group(1)) > 0


def test_the_map_shows_where_the_unit_fires_and_flat_layers_get_none(run, tmp_path):
    from PIL import Image

    from agent.ui.overlay import heat, overlaid
    from agent.ui.report import Shot

    engine = build_engine(run.settings)
    half = Image.new("RGB", (96, 64), (0, 0, 255))  # wider than high: the model sees the centre 64 x 64
    half.paste((255, 0, 0), (0, 0, 48, 64))  # red on the left half
    maps = engine.activation_maps(["half-red"], lambda i: half, unit=0)
    size = engine.model.input_size
    assert maps is not None and maps[0].shape == (size, size)
    assert maps[0][:, : size * 7 // 16].min() > 0.5 and maps[0][:, size * 9 // 16:].max() == 0  # the crop's left half
    def unreadable(i):
        raise AssertionError("a cached map was computed again")

    assert engine.activation_maps(["half-red"], unreadable, unit=0)[0].shape == (size, size)  # from the cache
    assert engine.cache.stats["activation_repaired"] == 0
    drawn = np.asarray(heat(half, maps[0], float(maps[0].max()), engine.model.input_box(96, 64), 32), dtype=float)
    assert drawn[:, :12, 1].mean() > 100 and abs(drawn[:, 20:, :] - [0, 0, 255]).max() < 3  # yellowish where red only
    shot = Shot("data:", "half red", 1.0, key="half-red")
    (strip,), scale = overlaid(engine, 0, [[shot]], {"half-red": lambda: half}, 32, scale=4.0)
    assert scale == 4.0 and strip[0].overlay.startswith("data:image/jpeg;base64,")
    flat = build_engine(run.settings.model_copy(update={"layer": "head"}))
    assert flat.activation_maps(["half-red"], lambda i: half, unit=0) is None
    assert overlaid(flat, 0, [[shot]], {"half-red": lambda: half}, 32) == ([[shot]], None)
