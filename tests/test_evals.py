"""The evals on the tiny planted suite with a scripted LLM: table shape, and the oracle."""

import json

import pytest

from evals import run

from evals.metrics import Matcher
from evals.planted import Concept, load_planted, load_suite, parse_detector
from tools.activations import layer_infos
from tools.errors import LineError
from tools.generators.procedural import ProceduralGenerator
from tools.text import default_embedder

METHODS = ["oracle", "ours", "operators", "paper", "closed", "top-class", "one-shot"]
# a small sweep vocabulary (the generator's whole one is 542 concepts, rendered once per method's cache)
VOCABULARY = ["plain red", "plain cyan", "plain blue", "horizontal stripes", "vertical stripes", "polka dots",
              "small red polka dots", "red stripes", "green circles", "checkerboard", "white noise", "yellow squares"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One run of every method on the tiny suite (CoSy against procedural images only)."""
    tmp_path = tmp_path_factory.mktemp("evals")
    config = tmp_path / "line.toml"
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("\n".join(VOCABULARY) + "\n")
    config.write_text(f"control = 'procedural:40'\n[loop]\nimages_per_concept = 2\nmax_iterations = 2\n"
                      f"sweep_concepts = '{vocabulary}'\n")
    out = tmp_path / "out"
    argv = ["--suite", "tiny", "--methods", "all", "--out", str(out), "--llm", "scripted",
            "--config", str(config), "--cache-dir", str(tmp_path / "cache")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LINE_SHARED_DATA", str(tmp_path / "no-shared-data"))
        return run.evaluate(run.build_parser().parse_args(argv)), out


def test_table_has_every_method_and_metric(results):
    result, out = results
    assert [s["method"] for s in result["summary"]] == METHODS
    assert len(result["rows"]) == len(METHODS) * 4
    for entry in result["summary"]:
        assert {"match", "cosy_auc_procedural", "cosy_mad_procedural", "images", "llm_calls", "seconds"} <= set(entry)
    assert {p.name for p in out.iterdir()} >= {"units.csv", "summary.csv", "results.json", "config.json", "table.md"}
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(METHODS) and table[0].count("|") == table[2].count("|")
    assert json.loads((out / "config.json").read_text())["suite"]["digest"] == load_suite("tiny").digest


def test_oracle_label_scores_its_own_unit(results):
    result, _ = results
    oracle = [r for r in result["rows"] if r["method"] == "oracle"]
    assert all(r["match"] and r["strict"] and r["cosy_auc_procedural"] > 0.9 for r in oracle), oracle
    assert all("strict" in entry for entry in result["summary"])


@pytest.mark.parametrize("label, truth, strict", [
    ("orange diagonal stripes", "orange diagonal stripes", True),
    ("crimson diagonal stripes", "red diagonal stripes", True),  # the same scene
    ("black and white stripes", "black stripes on white background", True),
    ("large blue polka dots on white background", "large blue polka dots", True),  # more is allowed
    ("diagonal stripes", "orange diagonal stripes", False),  # a colour missing
    ("orange stripes", "orange diagonal stripes", False),  # an orientation missing
    ("blue polka dots", "large blue polka dots", False),  # a size missing
    ("checkerboard", "checkerboard on navy background", False),  # a background colour missing
])
def test_a_strict_match_names_every_colour_orientation_and_size_of_the_truth(label, truth, strict):
    matcher = Matcher(default_embedder())
    assert matcher.strict(label, Concept(truth)) is strict
    assert not strict or matcher.how(label, Concept(truth))


def test_detector_expressions_are_parsed_not_evaluated():
    assert parse_detector("and(colour('red'), not(dots(scale=12)))").kind == "compositional"
    assert parse_detector("or(colour(hue=(-10, 10)), stripes('vertical'))").kind == "polysemantic"
    for bad in ["__import__('os')", "colour('red').mro", "colour(name=open('x'))", "lambda: 1", "dots(size=3)"]:
        with pytest.raises(LineError):
            parse_detector(bad)


def test_planted_model_has_one_layer_of_units():
    model = load_planted("tiny")
    layers = layer_infos(model)
    assert [layer.name for layer in layers] == ["units"] and layers[0].units == 4
    assert model.mean == (0.0, 0.0, 0.0) and model.std == (1.0, 1.0, 1.0)


def test_the_sweep_vocabulary_draws_every_planted_truth():
    """The closed method is the upper bound of closed-vocabulary labellers: it must score
    every planted unit's truth (for an OR unit, each of its concepts)."""
    generator = ProceduralGenerator()
    scenes = {generator.interpret(c).canonical for c in generator.sweep_vocabulary()}
    for suite in ("planted", "dev"):
        for unit in load_suite(suite).units:
            truths = unit.concepts if unit.kind == "polysemantic" else (unit.truth,)
            assert all(generator.interpret(t.label).canonical in scenes for t in truths), (suite, unit.name)


def test_the_noise_template_sees_only_where_edges_fall():
    """The unexpressible suite's unit (issue 23): a plain image gives nothing, and moving a
    drawing by a few pixels changes its response as much as another drawing does."""
    import torch

    from evals.planted import Features, noise_template

    generator = ProceduralGenerator()
    images = generator.render(["vertical stripes"] * 12, list(range(12)))
    x = torch.stack([torch.tensor(list(im.convert("RGB").resize((224, 224)).getdata()), dtype=torch.float32)
                     .view(224, 224, 3).permute(2, 0, 1) / 255 for im in images])
    raw = noise_template(Features(x))
    shifted = noise_template(Features(torch.roll(x, shifts=6, dims=3)))
    assert raw.abs().max() < 0.1 and noise_template(Features(torch.full((1, 3, 224, 224), 0.5))).abs().max() < 1e-6
    assert torch.corrcoef(torch.stack([raw, shifted]))[0, 1].abs() < 0.6  # where the edges fall, not what is drawn
    assert load_suite("unexpressible").units[-1].detector.op == "noise_template"
