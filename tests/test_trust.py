"""How sure a label is (issue 23): meanings from evidence on fresh images, and the
explained / unexplained verdict with bootstrap intervals and a p-value."""

import json

import numpy as np
import pytest

from tools import meanings, verdict
from tools.generators.procedural import ProceduralGenerator
from tools.history import score_steps
from tools.polysemantic import Polysemanticity
from tools.polysemantic import analyse as by_words

OR_NET = "tests.trust_models:or_net"


@pytest.fixture
def or_engine(settings):
    from agent.runs.engine_factory import build_engine

    return build_engine(settings.model_copy(update={"model": OR_NET, "layer": "units"}))


RED = ["plain red", "white hearts on red background", "small navy dots on red background",
       "thin black stripes on red background", "one green star on red background"]


def test_a_monosemantic_unit_scored_on_phrasings_of_one_attribute_is_not_flagged(engine):
    """Redness (colour net unit 0) on five scenes that share only "red": the words are far
    apart (the old analysis flags the unit), the evidence says one meaning."""
    steps = score_steps(engine, 0, RED, "llm", 1)
    assert min(s.scores.auc for s in steps) >= 0.85
    from tools.text import default_embedder
    assert by_words(steps, default_embedder()).polysemantic  # what words alone said
    result = meanings.analyse(engine, 0, steps, "plain red")
    assert not result.polysemantic and result.method == "evidence"
    assert [m.concept for m in result.meanings] == ["plain red"]
    assert set(result.meanings[0].concepts) >= {"white hearts on red background", "one green star on red background"}
    same = [c for c in result.comparisons if c.outcome == "same"]
    assert same and all(not c.forward.passed for c in same)  # without red, the scenes leave the unit cold
    assert result.meanings[0].evidence.evidence.images >= 3


def test_an_or_unit_is_flagged_with_both_meanings_confirmed_on_fresh_images(or_engine):
    concepts = ["plain red", "white hearts on red background", "plain blue", "thin black stripes on blue background"]
    steps = score_steps(or_engine, 0, concepts, "llm", 1)
    result = meanings.analyse(or_engine, 0, steps, "plain blue")
    assert result.polysemantic
    assert {m.concept for m in result.meanings} == {"plain red", "plain blue"}
    for meaning in result.meanings:
        ev = meaning.evidence.evidence
        assert meaning.evidence.passed and ev.images >= 3 and ev.p <= 0.01 and ev.auc_low >= 0.6
        assert all(seed >= meanings.MEANING_SEED for seed in meaning.evidence.seeds)  # fresh seeds only
    second = result.meanings[1]
    assert second.distinct and all(t.passed for t in second.distinct) and "absent" in second.why
    assert "polysemantic, 2 distinct meanings" in result.describe()
    assert Polysemanticity.model_validate(json.loads(result.model_dump_json())) == result


class LuckyProbe:
    """A unit that fires on anything red; on green stripes only at seed 1001 (one lucky image)."""

    def __init__(self):
        self.generator = ProceduralGenerator(size=32)
        rng = np.random.default_rng(0)
        self._control = rng.normal(0, 1, (200, 1))

    def render(self, prompts, seeds):
        return list(zip(prompts, seeds)), 0

    def image_activations(self, refs):
        def act(prompt, seed):
            if "red" in self.generator.drawn(prompt, seed).split():
                return 5.0 + seed % 3
            if "stripes" in prompt and seed == 1001:
                return 9.0
            return float(np.random.default_rng(seed).normal(0, 1))
        return np.array([[act(p, s)] for p, s in refs])

    def control_activations(self):
        return self._control


def _steps(*pairs):
    from tools.history import ActivationStats, Step
    from tools.scoring import Scores

    return [Step(iteration=1, concept=c, source="llm", prompts=[c], seeds=[0], image_keys=["k"], images_rendered=0,
                 activations=ActivationStats(mean=1, std=0, min=1, max=1),
                 scores=Scores(auc=a, mad=2.0, mean=1.0, u=1.0, p=0.001), seconds=0.0) for c, a in pairs]


def test_a_meaning_carried_by_one_lucky_image_does_not_count():
    probe = LuckyProbe()
    steps = _steps(("plain red", 0.99), ("green stripes", 0.95))
    result = meanings.analyse(probe, 0, steps, "plain red")
    assert not result.polysemantic and [m.concept for m in result.meanings] == ["plain red"]
    lucky = next(c for c in result.comparisons if c.candidate == "green stripes").forward
    assert max(lucky.evidence.activations) == 9.0 and not lucky.passed  # one high image among four
    assert lucky.evidence.auc_low < 0.6
    # the verdict's bar agrees: one lucky image among three fresh ones explains nothing
    judged = verdict.judge([9.0, 0.1, -0.3], probe.control_activations()[:, 0])
    assert not judged.explained and "interval" in judged.reason


class FaintProbe(LuckyProbe):
    """An AND-like unit, all but silent on the control set: 1.0 on red, 0.05 on stripes of any
    other colour (above every control image, yet it leaves the unit all but cold)."""

    def __init__(self):
        super().__init__()
        self._control = np.random.default_rng(0).normal(0, 0.01, (200, 1))

    def image_activations(self, refs):
        def act(prompt, seed):
            scene = self.generator.drawn(prompt, seed).split()
            if "red" in scene:
                return 1.0 - 0.01 * (seed % 3)
            return 0.05 + 0.002 * (seed % 3) if "stripes" in scene else float(np.random.default_rng(seed).normal(0, 0.01))
        return np.array([[act(p, s)] for p, s in refs])


def test_images_that_outrank_a_silent_control_but_leave_the_unit_cold_are_no_meaning():
    """AUC ignores magnitude: stripes rank above every control image at 5% of red's response;
    they do not drive the unit, so they are no second meaning."""
    result = meanings.analyse(FaintProbe(), 0, _steps(("plain red", 0.99), ("green stripes", 0.97)), "plain red")
    faint = next(c for c in result.comparisons if c.candidate == "green stripes").forward
    assert faint.evidence.auc >= 0.95 and not faint.passed
    assert not result.polysemantic and [m.concept for m in result.meanings] == ["plain red"]


def test_a_unit_no_concept_separates_from_the_control_set_is_unexplained(or_engine):
    """Unit 1 of the OR net is dead: every image, concept or control, gives 0."""
    steps = score_steps(or_engine, 1, ["plain red", "plain blue", "green stripes"], "llm", 1)
    fresh = or_engine.evaluate("plain red", range(1000, 1003)).activations[:, 1]
    judged = verdict.label_verdict(or_engine, 1, fresh)
    assert not judged.explained and judged.reason.startswith("unexplained")
    assert judged.evidence.auc == pytest.approx(0.5) and judged.evidence.p > 0.01
    assert not meanings.analyse(or_engine, 1, steps, "plain red").meanings
    # and the label of a unit that a concept does drive is explained, with its numbers
    good = verdict.label_verdict(or_engine, 0, or_engine.evaluate("plain red", range(1000, 1003)).activations[:, 0])
    assert good.explained and good.evidence.images == 3 and good.evidence.auc_low >= 0.7
    assert good.evidence.mad_low <= good.evidence.mad <= good.evidence.mad_high


def test_bootstrap_intervals_and_p():
    control = np.random.default_rng(1).normal(0, 1, 300)
    strong = verdict.evidence([3.0, 3.5, 4.0, 3.2, 2.9], control)
    assert strong.auc > 0.99 and strong.auc_low > 0.95 and strong.p < 0.001
    assert strong.mad_low < strong.mad < strong.mad_high
    never = verdict.judge(None, control)
    assert not never.explained and "fresh" in never.reason


def test_drawings_that_fire_the_unit_less_than_photos_explain_nothing():
    control = np.zeros(100)
    photos = np.full(50, 10.0)
    judged = verdict.judge([3.0, 3.1, 2.9], control, photos)
    assert judged.evidence.auc == 1.0 and not judged.explained
    assert judged.natural.auc == 0.0 and "less than ordinary photos" in judged.reason


def test_three_drawings_that_outrank_photos_by_chance_explain_nothing():
    """Against natural photos the bar asks what it asks against the control: an AUC of 0.85
    on three images (two above every photo, one in the middle, as _blocks.8 unit 21's best
    finalist gave) is not significant, so the label is unexplained; three images above
    every photo are."""
    control = np.zeros(300)
    photos = np.linspace(0.0, 2.5, 250)
    lucky = verdict.judge([2.46, 2.69, 1.42], control, photos)
    assert lucky.natural.auc == pytest.approx(0.85, abs=0.02) and lucky.natural.p > 0.01
    assert not lucky.explained and "could be chance" in lucky.reason
    above = verdict.judge([2.6, 2.7, 2.8], control, photos)
    assert above.natural.auc == 1.0 and above.natural.p <= 0.01 and above.explained


def test_a_run_carries_the_verdict_in_the_label_table_history_report_and_api(tmp_path):
    from agent.ui import report
    from agent.config import load_settings
    from agent.runs.engine_factory import build_engine
    from agent.llm import ScriptedChatModel
    from agent.runs.context import build_context
    from agent.runs.run import Run
    from agent.ui.summaries import summary_row
    from tests.helpers import say

    settings = load_settings(
        model=OR_NET, layer="units", control="procedural:40", cache_dir=str(tmp_path / "cache"),
        runs_dir=str(tmp_path / "runs"),
        loop={"images_per_concept": 3, "init_top": 2, "init_random": 1, "sweep": False, "bank_top": 0,
              "max_iterations": 4, "patience": 2})
    replies = [say("plain red"), say("plain blue"), say("white hearts on blue background"), say("red stripes"),
               say("green noise")] * 2
    run = Run.create(settings, [0, 1], "trust")
    run.label(build_context(settings, build_engine(settings), chat=ScriptedChatModel(replies=replies)))
    states = run.states()
    good, dead = states[0].label, states[1].label
    assert good.explained and good.confidence.evidence.images >= 3 and good.confidence.evidence.p <= 0.01
    assert dead.explained is False and "unexplained" in dead.confidence.reason
    assert good.polysemanticity.method == "evidence" and good.polysemanticity.meanings
    row = summary_row(states[0], settings.loop.judge())
    assert row["explained"] is True and row["fresh_auc_interval"][0] <= row["fresh_auc"] <= row["fresh_auc_interval"][1]
    history = json.loads(run.export().read_text())
    assert '"explained": true' in json.dumps(history) and '"explained": false' in json.dumps(history)
    index = report.write_report(run)
    text = index.read_text()
    assert "fresh AUC" in text and 'data-explained="0"' in text and 'id="verdict"' in text
    page = (index.parent / next(p.name for p in index.parent.glob("*.html") if p.name != "index.html")).read_text()
    assert "verdict:" in page and ("Meanings in the history, confirmed on fresh images" in page or "no meaning" in page)
    import line_agent
    opened = line_agent.open_run("trust", runs_dir=str(tmp_path / "runs"))
    assert [label.explained for label in opened.labels] == [True, False]


class LinesProbe(LuckyProbe):
    """A unit that fires on drawn lines: stripes, and the lines of a grid."""

    def image_activations(self, refs):
        def act(prompt, seed):
            kind = self.generator.drawn(prompt, seed)
            if "stripes" in kind or "grid" in kind:
                return 5.0 + seed % 3
            return float(np.random.default_rng(seed).normal(0, 1))
        return np.array([[act(p, s)] for p, s in refs])


def test_a_grid_shows_stripes_so_a_lines_unit_has_one_meaning():
    """Ablating words cannot draw a grid without its lines: the generator says a grid shows
    stripes, so no image of the grid counts as a contrast image against stripes."""
    probe = LinesProbe()
    assert "stripes" in probe.generator.contains("tiny white grid on navy background")
    assert "gray" in probe.generator.contains("black and white gradient")
    assert "stripe" in meanings.shown_words(probe.generator, "tiny vertical white grid on navy background")
    result = meanings.analyse(probe, 0, _steps(("horizontal stripes", 0.99), ("tiny white grid", 0.97)),
                              "horizontal stripes")
    grid = next(c for c in result.comparisons if c.candidate == "tiny white grid")
    assert grid.forward.dropped > 0 and not grid.distinct
    assert not result.polysemantic


def test_candidates_reach_past_phrasings_of_one_meaning_into_the_sweep():
    """Six phrasings of red fill the history; the unit's sweep holds a concept without red.
    It is among the candidates, ahead of the sixth phrasing of red."""
    generator = ProceduralGenerator(size=32)
    steps = _steps(("plain red", 0.99), ("red stripes", 0.98), ("red blobs", 0.97), ("red grid", 0.97),
                   ("red checkerboard", 0.96), ("red waves", 0.96), ("red spiral", 0.95))
    assert "blue stripes" not in [c for c, _ in meanings.candidates(steps, generator, "plain red", 0.85)]
    chosen = [c for c, _ in meanings.candidates(steps, generator, "plain red", 0.85, also={"blue stripes": 0.9})]
    assert "blue stripes" in chosen and "plain red" in chosen and len(chosen) == meanings.MAX_CANDIDATES


def test_a_second_meaning_only_the_sweep_scored_is_found(or_engine):
    """The loop's short history holds only red concepts; the unit also fires on blue, which
    its vocabulary sweep scored. The meanings reach it, and confirm it on fresh images."""
    steps = score_steps(or_engine, 0, RED, "llm", 1)
    assert not meanings.analyse(or_engine, 0, steps, "plain red").polysemantic
    result = meanings.analyse(or_engine, 0, steps, "plain red", also={"white hearts on blue background": 1.0})
    assert result.polysemantic and {m.concept for m in result.meanings} == {"plain red", "white hearts on blue background"}
