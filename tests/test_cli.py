"""The `line` command as a user runs it (in-process, through main())."""

import json

import pytest

from agent.ui.cli import main
from tests.helpers import COLOUR_NET


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def base(tmp_path):
    return ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", str(tmp_path / "c")]


def test_layers_lists_names_shapes_units(capsys):
    code, out, _ = run_cli(capsys, "layers", "--model", COLOUR_NET, "--json")
    layers = {layer["name"]: layer for layer in json.loads(out)}
    assert code == 0 and layers["relu"]["units"] == 4 and layers["head"]["units"] == 2


def test_score_json_then_warm_cache(capsys, base):
    code, out, _ = run_cli(capsys, "score", *base, "--units", "all", "--concept", "red background", "--json")
    result = json.loads(out)
    assert code == 0 and [u["unit"] for u in result["units"]] == [0, 1, 2, 3]
    red = result["units"][0]
    assert red["auc"] > 0.9 and red["p"] < 0.05 and {"mad", "mean", "u"} <= set(red)
    assert result["understood"] and result["cache"]["images_generated"] > 0
    code, out, _ = run_cli(capsys, "score", *base, "--unit", "0", "--concept", "red background", "--json")
    warm = json.loads(out)
    assert warm["units"][0]["auc"] == red["auc"] and warm["cache"].get("images_generated", 0) == 0


def test_score_top_units(capsys, base):
    code, out, _ = run_cli(capsys, "score", *base, "--units", "all", "--top", "2", "--concept", "blue background", "--json")
    assert [u["unit"] for u in json.loads(out)["units"]][0] == 2


@pytest.mark.parametrize("argv, words", [
    (["--layer", "relux"], "relu"),
    (["--unit", "9"], "out of range"),
    (["--model", "no-such-model"], "no-such-model"),
    (["--control", "dir:/no/such/folder"], "does not exist"),
    (["--control", "imagenet"], "unknown control set"),
])
def test_bad_input_is_one_clear_line_and_exit_2(capsys, base, argv, words):
    args = dict(zip(base[::2], base[1::2]))
    args.update(dict(zip(argv[::2], argv[1::2])))
    flat = [x for pair in args.items() for x in pair]
    code, out, err = run_cli(capsys, "score", *flat, "--concept", "red")
    assert code == 2 and words in err and err.startswith("error:")


def test_label_history_and_resume_of_unknown_run(capsys, base, tmp_path):
    config = tmp_path / "line.toml"
    replies = [json.dumps({"reasoning": "r", "concept": c}) for c in ("red background", "blue noise", "red squares")]
    config.write_text(
        "[llm]\nprovider = 'scripted'\nscript = " + json.dumps(replies) + "\n"
        "[loop]\nmax_iterations = 3\nimages_per_concept = 3\ninit_top = 2\ninit_random = 1\nsweep = false\n")
    runs = str(tmp_path / "runs")
    code, out, _ = run_cli(capsys, "label", *base, "--config", str(config), "--units", "0-1", "--run-id", "demo", "--runs-dir", runs)
    assert code == 0 and "labels" in out and "red" in out
    history = json.loads((tmp_path / "runs" / "demo" / "history.json").read_text())
    assert set(history["units"]) == {"0", "1"}
    code, out, _ = run_cli(capsys, "history", "demo", "--unit", "0", "--runs-dir", runs)
    assert code == 0 and "red background" in out and "label:" in out
    code, _, err = run_cli(capsys, "history", "demo", "--unit", "5", "--runs-dir", runs)
    assert code == 2 and "not in run demo" in err
    code, _, err = run_cli(capsys, "label", "--resume", "nope", "--runs-dir", runs)
    assert code == 2 and "does not exist" in err and "demo" in err
    code, out, _ = run_cli(capsys, "label", "--resume", "demo", "--runs-dir", runs)
    assert code == 0 and "red" in out  # finished units are not labelled again
