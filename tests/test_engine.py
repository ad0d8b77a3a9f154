"""The shared engine on the colour net: control sets, control modes, caches, bank."""

import logging

import numpy as np
import pytest
from PIL import Image

from agent.config import load_settings
from agent.runs.engine_factory import build_engine
from tests.helpers import COLOUR_NET
from tools.criterion import Criterion
from tools.errors import LineError


def test_red_images_drive_the_red_unit_only(engine):
    evidence = engine.evaluate("red background")
    assert evidence.scores(0).auc > 0.9 and evidence.scores(2).auc < 0.6
    assert evidence.top_units(1) == [0] and evidence.interpretation.understood


def test_second_evaluation_renders_nothing_and_reuses_activations(engine):
    first = engine.evaluate("green stripes")
    again = engine.evaluate("green stripes")
    assert first.rendered == 3 and again.rendered == 0
    np.testing.assert_array_equal(first.activations, again.activations)
    assert engine.cache.stats["activation_hit"] >= 3


def test_corrupt_cache_entries_are_recomputed_to_the_same_result(engine):
    first = engine.evaluate("blue noise")
    ref = first.images[0]
    engine.cache.image_path(ref.key).write_bytes(b"\x89PNG broken")
    act_key = engine._act_key(ref.key)
    engine.cache.array_path(act_key).write_bytes(b"not an array")
    again = engine.evaluate("blue noise")
    np.testing.assert_allclose(again.activations, first.activations, rtol=1e-5)
    assert engine.cache.stats["activation_repaired"] == 1


def test_class_control_mode_compares_with_the_least_activating_class(settings):
    data = settings.model_dump()
    data["loop"]["control_mode"] = "class"
    engine = build_engine(load_settings(**data))
    classes, means = engine.class_means()
    evidence = engine.evaluate("red background")
    control = engine.control_activations()[np.array(engine.control.labels) == classes[means[:, 0].argmin()]]
    expected = (evidence.activations[:, 0].mean() - control[:, 0].mean()) / (control[:, 0].std() + 1e-8)
    assert evidence.scores(0).mad == pytest.approx(expected, rel=1e-5)
    assert evidence.scores(0).auc == 1.0


def test_folder_control_set_skips_unreadable_images(tmp_path, caplog):
    folder = tmp_path / "photos"
    (folder / "reds").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32), (200, 20 * i, 10)).save(folder / "reds" / f"{i}.png")
        Image.new("RGB", (32, 32), (10, 20 * i, 200)).save(folder / f"n0{i}_blue_thing.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    settings = load_settings(model=COLOUR_NET, layer="relu", control=f"dir:{folder}", cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING):
        engine = build_engine(settings)
    assert sorted(set(engine.control.labels)) == ["blue thing", "reds"]
    assert len(engine.control) == 8 and "broken.jpg" in caplog.text and engine.control.skipped
    classes, means = engine.class_means()
    assert classes[means[:, 0].argmax()] == "reds"


def test_parse_units_and_out_of_range(engine):
    from tools.engine import parse_units

    assert parse_units("0-2,3", engine.units) == [0, 1, 2, 3]
    assert parse_units("all", engine.units) == [0, 1, 2, 3]
    with pytest.raises(LineError, match="out of range"):
        parse_units("2-9", engine.units)
    with pytest.raises(LineError, match="bad unit list"):
        parse_units("red", engine.units)
    with pytest.raises(LineError, match="unit 7 is out of range for layer relu"):
        engine.check_unit(7)


def test_bank_ranks_scored_concepts_for_any_unit(engine):
    for concept in ("red background", "blue background", "white background"):
        engine.evaluate(concept)
    assert [c for c, _ in engine.bank_best(2, 1, Criterion())] == ["blue background"]
    assert [c for c, _ in engine.bank_best(0, 1, Criterion(), exclude=["red background"])] != ["red background"]


def test_scoring_some_units_equals_the_full_table(engine, settings):
    data = settings.model_dump()
    data["loop"]["control_mode"] = "class"
    for eng in (engine, build_engine(load_settings(**data))):
        acts = eng.evaluate("red background").activations
        full, part = eng.score_table(acts), eng.score_table(acts, [3, 0])
        for name in full:
            np.testing.assert_allclose(part[name], full[name][[3, 0]])
