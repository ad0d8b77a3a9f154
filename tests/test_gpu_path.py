"""The real path (issue 14): a diffusers pipeline saved to a folder, photos against photos,
images batched across concepts, progress, weights that change, runs mended on resume.

The pipeline is tiny and random (evals.tiny_diffusion), the target the colour net; the
natural control set is 10 of the shared ImageNet samples (skipped without them).
"""

import io
import json
import logging
import shutil
import socket

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from agent.config import load_settings
from agent.runs.engine_factory import _warn_drawings_for_photos, build_engine, control_spec
from tests.helpers import COLOUR_NET, NATURAL_CLASSES, line
from evals.fake_openai import FakeOpenAI
from tools.errors import LineError

SIZE = 32



def diffusers_settings(tmp_path, pipeline, **extra):
    loop = {"images_per_concept": 3, "init_top": 2, "init_random": 1, "sweep": False, "bank_top": 0,
            "max_iterations": 1} | extra.pop("loop", {})
    return load_settings(model=COLOUR_NET, layer="relu", cache_dir=str(tmp_path / "cache"),
                         generator={"kind": "diffusers", "model": str(pipeline), "size": SIZE,
                                    **extra.pop("generator", {})},
                         loop=loop, **extra)


class Recorder:
    """An engine progress callback that keeps what it was told."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, what: str, done: int, total: int) -> None:
        self.calls.append((what, done, total))

    def images(self) -> list[tuple[int, int]]:
        return [(done, total) for what, done, total in self.calls if what == "images"]


# --- the control set follows the generator (item 3) ------------------------------------------
def test_the_control_default_follows_the_generator(tmp_path, shared_photos, monkeypatch, caplog):
    assert load_settings().control == "auto"
    assert control_spec(load_settings()) == "procedural:300"
    photos = load_settings(generator={"kind": "diffusers"})
    assert control_spec(photos) == f"dir:{shared_photos}"
    assert control_spec(load_settings(generator={"kind": "diffusers"}, control="dir:/mine")) == "dir:/mine"

    monkeypatch.setenv("LINE_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(LineError) as info:
        control_spec(photos)
    assert "imagenet-samples" in str(info.value) and 'control = "dir:PATH"' in str(info.value)

    _warn_drawings_for_photos.cache_clear()
    drawings = load_settings(model=COLOUR_NET, layer="relu", control="procedural:40", cache_dir=str(tmp_path / "c"),
                             generator={"kind": "diffusers", "model": str(tmp_path)})
    with caplog.at_level(logging.WARNING):
        build_engine(drawings)
        build_engine(drawings)  # allowed, warned once
    assert sum("procedural drawings" in r.getMessage() for r in caplog.records) == 1


def test_imagenet_val_folders_take_their_class_names_from_the_mapping_file(tmp_path, shared_photos):
    val = tmp_path / "val"
    for i, name in enumerate(NATURAL_CLASSES[:3]):  # 3 photos a class: a control folder needs 8 different ones
        wnid = name.split("_")[0]
        (val / wnid).mkdir(parents=True)
        for j, photo in enumerate(NATURAL_CLASSES[i * 3: i * 3 + 3]):
            shutil.copy(shared_photos / f"{photo}.jpg", val / wnid / f"ILSVRC2012_val_000{j}.JPEG")
    (val / "synset_words.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                                          "n01530575 brambling, Fringilla montifringilla\n")
    from tools.cache import DiskCache
    from tools.control import load_control_set

    control = load_control_set(f"dir:{val}", DiskCache(tmp_path / "c"))
    assert control.classes == ["brambling", "goldfish", "tench"]


# --- batching across concepts and progress (items 2 and 4) ----------------------------------
def test_concepts_are_rendered_together_in_pipeline_batches_with_progress(tmp_path, tiny_pipeline, shared_photos,
                                                                          monkeypatch):
    from evals import metrics
    from tools.history import confirm_finalists, score_steps

    recorder = Recorder()
    engine = build_engine(diffusers_settings(tmp_path, tiny_pipeline, generator={"batch_size": 4}), progress=recorder)
    assert engine.generator.id.endswith(f"|fp32|cpu|template={engine.generator.template_version}")  # auto, here
    assert engine.control.spec == f"dir:{shared_photos}"

    steps = score_steps(engine, 0, ["cat", "red car", "sand"], "init", 0)  # the loop's init
    assert [s.images_rendered for s in steps] == [3, 3, 3]
    assert recorder.images() == [(0, 9), (4, 9), (8, 9), (9, 9)]  # one pass, batches that span concepts

    recorder.calls.clear()
    assert engine.sweep(["cat", "dog", "tree"]) == 6  # "cat" is cached: the sweep renders the other two
    assert recorder.images() == [(0, 6), (4, 6), (6, 6)]

    recorder.calls.clear()
    finalists = confirm_finalists(engine, 0, [("cat", "top"), ("dog", "top")], images=2)
    assert [f.images_rendered for f in finalists] == [2, 2] and recorder.images() == [(0, 4), (4, 4)]

    recorder.calls.clear()
    monkeypatch.setattr(metrics, "COSY_IMAGES", 3)
    cosy = metrics.Cosy("natural", engine)
    cosy.prepare(["cat", "tree"])  # the evals' CoSy images: every label at once
    assert recorder.images() == [(0, 6), (4, 6), (6, 6)]
    cosy.scores("cat", 0)
    assert len(recorder.images()) == 3  # nothing more to render


def test_line_label_on_a_tiny_pipeline_with_auto_device_shows_rendering_progress(
        capsys, tmp_path, tiny_pipeline, shared_photos, monkeypatch):
    import agent.ui.cli  # noqa: F401  (imported before the patch: it keeps the real err_console for later tests)
    import agent.ui.console

    terminal = io.StringIO()
    monkeypatch.setattr(agent.ui.console, "err_console", Console(file=terminal, force_terminal=True, width=120))
    config = tmp_path / "line.toml"
    config.write_text(f"""model = "{COLOUR_NET}"
layer = "relu"
device = "auto"
cache_dir = "{tmp_path / 'cache'}"
[generator]
kind = "diffusers"
model = "{tiny_pipeline}"
size = {SIZE}
device = "auto"
batch_size = 4
[llm]
provider = "scripted"
script = ['{{"concept": "red umbrellas", "reasoning": "red"}}']
[loop]
images_per_concept = 2
init_top = 2
init_random = 1
sweep = false
bank_top = 0
max_iterations = 1
confirm_top = 2
confirm_images = 2
""")
    code, out, err = line(capsys, "label", "--config", config, "--run-id", "r", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "|fp32|cpu|" in " ".join(out.split())  # device "auto" resolved to this machine's CPU
    shown = terminal.getvalue()
    assert "rendering images" in shown and "6/6" in shown  # the initial pool: 3 concepts x 2 images, one pass
    run = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert run["settings"]["control"] == f"dir:{shared_photos}"  # stored resolved
    history = json.loads((tmp_path / "runs" / "r" / "history.json").read_text())["units"]["0"]
    natural = {name.split("_", 1)[1].replace("_", " ") for name in NATURAL_CLASSES}
    init = [s for s in history["steps"] if s["source"] == "init"]
    assert len(init) == 3 and all(s["concept"] in natural for s in init)  # class names of photos, as prompts
    assert all(p.startswith("a realistic photo of ") for s in init for p in s["prompts"])

    code, out, _ = line(capsys, "score", "--config", config, "--concept", "sand", "--json")
    result = json.loads(out)
    assert code == 0 and result["control"].startswith(f"dir:{shared_photos} (10 images")


# --- a folder's fingerprint (item 5) ---------------------------------------------------------
def test_replacing_the_weights_in_a_folder_invalidates_its_images(tmp_path, tiny_pipeline, shared_photos):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sd"
    shutil.copytree(tiny_pipeline, folder)
    settings = diffusers_settings(tmp_path, folder)
    first = build_engine(settings).evaluate("cat")
    assert first.rendered == 3 and build_engine(settings).evaluate("cat").rendered == 0  # cached
    weights = next((folder / "vae").glob("*.safetensors"))
    tensors = load_file(weights)
    tensors = {name: t * 0.5 if t.dtype.is_floating_point else t for name, t in tensors.items()}
    save_file(tensors, weights)
    after = build_engine(settings).evaluate("cat")
    assert after.rendered == 3  # same folder name, new weights: new images
    assert after.images[0].key != first.images[0].key
    old, new = (np.asarray(Image.open(e.images[0].path)) for e in (first, after))
    assert not np.array_equal(old, new)  # and they really were drawn by the new weights


# --- resume with mended settings (item 6) ----------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resume_with_a_fixed_config_mends_a_bad_llm_endpoint(capsys, tmp_path):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    base = ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", cache]
    loop = "[loop]\nimages_per_concept = 2\ninit_top = 1\ninit_random = 0\nbank_top = 0\nmax_iterations = 2\ndedup = false\nsweep = false\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[llm]\nprovider = 'openai-compatible'\nbase_url = 'http://127.0.0.1:{_closed_port()}/v1'\n"
                   f"retries = 0\ntimeout = 5\n{loop}")
    code, _, err = line(capsys, "label", *base, "--config", bad, "--run-id", "r", "--runs-dir", runs)
    assert code == 2 and "did not answer" in err and "line label --resume r" in " ".join(err.split())

    with FakeOpenAI("ok", reply=json.dumps({"concept": "blue background", "reasoning": "blue"})) as server:
        fixed = tmp_path / "fixed.toml"
        fixed.write_text(f"[llm]\nprovider = 'openai-compatible'\nbase_url = '{server.url}'\n")
        code, out, err = line(capsys, "label", "--resume", "r", "--runs-dir", runs, "--config", fixed, "--device", "cpu")
    assert code == 0, err
    assert "mended settings: device, generator.device, llm.base_url" in " ".join(err.split())
    assert server.requests > 0 and "labels" in out
    meta = json.loads((runs / "r" / "run.json").read_text())
    assert meta["settings"]["llm"]["base_url"] == server.url and meta["mended"][0]["keys"][-1] == "llm.base_url"
    history = json.loads((runs / "r" / "history.json").read_text())["units"]["0"]
    assert any(s["source"] == "llm" and s["concept"] == "blue background" for s in history["steps"])


def test_resume_refuses_to_change_what_was_scored_naming_the_key(capsys, tmp_path):
    runs = tmp_path / "runs"
    base = ["--model", COLOUR_NET, "--layer", "relu", "--control", "procedural:40", "--cache-dir", tmp_path / "cache"]
    config = tmp_path / "line.toml"
    config.write_text("[llm]\nprovider = 'scripted'\nscript = ['{\"concept\": \"red\"}']\n"
                      "[loop]\nimages_per_concept = 2\ninit_top = 1\ninit_random = 0\nmax_iterations = 1\nsweep = false\n")
    assert line(capsys, "label", *base, "--config", config, "--run-id", "r", "--runs-dir", runs)[0] == 0
    for text, key in (("[generator]\nmodel = 'other'\n", "generator.model"), ("control = 'procedural:50'\n", "control"),
                      ("[loop]\nimages_per_concept = 3\n", "loop.images_per_concept"), ("layer = 'features'\n", "layer")):
        changed = tmp_path / "changed.toml"
        changed.write_text(text)
        code, _, err = line(capsys, "label", "--resume", "r", "--runs-dir", runs, "--config", changed)
        assert code == 2 and len(err.strip().splitlines()) == 1 and f"{key} (" in err, (text, err)
    budget = tmp_path / "budget.toml"
    budget.write_text("[loop]\nmax_iterations = 2\n")
    code, _, err = line(capsys, "label", "--resume", "r", "--runs-dir", runs, "--config", budget)
    assert code == 0 and "loop.max_iterations" in err
