"""`line find` and `line_agent.find`: the units of several layers that respond most to a concept."""

import json

import pytest

from tests.helpers import COLOUR_NET, NAN_NET, line, one_line_error
from tools.criterion import Criterion
from tools.scoring import Scores


@pytest.fixture
def base(tmp_path):
    return ["--model", COLOUR_NET, "--control", "procedural:40", "--cache-dir", str(tmp_path / "cache")]


def _ranked(rows, criterion):
    return criterion.order(rows, lambda row: Scores(**{k: row[k] for k in Scores.model_fields}))


def _found(capsys, base, *argv):
    code, out, err = line(capsys, "find", "red background", *base, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_units_per_layer_and_overall_best_first_by_the_criterion(capsys, base):
    result = _found(capsys, base, "--layers", "features,relu", "--top", "4")
    layers = {entry["layer"]: entry["units"] for entry in result["layers"]}
    assert list(layers) == ["features", "relu"] and all(len(units) == 4 for units in layers.values())
    criterion = Criterion(result["criterion"])
    for units in layers.values():
        assert units[0]["unit"] == 0 and units == _ranked(units, criterion)  # unit 0 is the red one
    overall = result["overall"]
    assert len(overall) == 4 and overall == _ranked(layers["features"] + layers["relu"], criterion)[:4]
    assert {(u["layer"], u["unit"]) for u in overall[:2]} == {("features", 0), ("relu", 0)}


def test_the_table_shows_each_layer_and_the_overall_best(capsys, base):
    code, out, _ = line(capsys, "find", "red background", *base, "--layers", "*", "--top", "2")
    assert code == 0
    for title in ("layer features", "layer relu", "layer head", "overall, 3 layers", "AUC", "MAD"):
        assert title in out


def test_the_concepts_images_render_once_for_all_layers_on_one_model(capsys, base, monkeypatch):
    import tools.models

    loads = []
    load = tools.models.load_target_model
    monkeypatch.setattr(tools.models, "load_target_model", lambda *a, **k: loads.append(a) or load(*a, **k))
    result = _found(capsys, base, "--layers", "*", "--images", "3")
    assert len(result["layers"]) == 3 and result["cache"]["images_generated"] == 3 and len(loads) == 1
    again = _found(capsys, base, "--layer", "relu", "--images", "3")  # one layer: no layer list, nothing rendered
    assert again["cache"].get("images_generated", 0) == 0 and len(loads) == 1


def test_words_the_generator_ignores_are_named(capsys, base):
    code, out, err = line(capsys, "find", "red zorblax stripes", *base, "--layer", "relu")
    assert code == 0 and "zorblax" in err and "does not understand" in err
    assert "ignored ['zorblax']" in out


@pytest.mark.parametrize("argv, words", [
    (["red", "--layers", "_blocks.*"], ["'_blocks.*'", "line layers"]),
    (["", "--layers", "*"], ["concept is empty"]),
    (["red", "--layers", "relu", "--layer", "relu"], ["--layers", "--layer"]),
    (["red", "--layers", "relu", "--top", "0"], ["--top"]),
])
def test_bad_input_is_one_clear_line_and_exit_2(capsys, base, argv, words):
    code, _, err = line(capsys, "find", *argv, *base)
    assert one_line_error(code, err, *words), err


def test_the_api_ranks_as_the_command_does(capsys, base, tmp_path):
    import line_agent

    result = _found(capsys, base, "--layers", "features,relu", "--top", "3")
    found = line_agent.find("red background", COLOUR_NET, "features,relu", top=3, control="procedural:40",
                            cache_dir=str(tmp_path / "cache"))
    assert [(u.layer, u.unit) for u in found] == [(u["layer"], u["unit"]) for u in result["overall"]]
    for entry in result["layers"]:
        assert [u.unit for u in found.layers[entry["layer"]]] == [u["unit"] for u in entry["units"]]
    assert found[0].auc == result["overall"][0]["auc"]
    rows = found.rows()
    assert rows[0]["overall_rank"] == 1 and {r["layer"] for r in rows} == {"features", "relu"}


def test_progress_is_reported_per_layer(settings):
    from agent.runs.find import find_units

    seen = []
    find_units(settings, "green background", "features,relu", top=1,
               progress=lambda layer: lambda what, done, total: seen.append((layer, what)))
    assert ("features", "images") in seen and ("relu", "images") not in seen  # rendered for the first layer only
    # one forward a batch for both layers, reported once (by the first layer's callback)
    assert ("features", "activations") in seen and ("relu", "activations") not in seen


def test_units_with_nan_activations_are_named_not_ranked(capsys, base, tmp_path):
    path = tmp_path / "nan_net.py"
    path.write_text(NAN_NET)
    nan = ["--model", f"{path}:net", *base[2:]]
    code, out, err = line(capsys, "find", "red background", *nan, "--layers", "features,relu", "--top", "4", "--json")
    result = json.loads(out)
    assert code == 0 and result["nonfinite_units"] == {"relu": [3]} and "units 3 of layer relu give NaN" in err
    relu = next(entry["units"] for entry in result["layers"] if entry["layer"] == "relu")
    assert relu[0]["unit"] == 0 and sorted(u["unit"] for u in relu) == [0, 1, 2]  # unit 3 is not ranked
