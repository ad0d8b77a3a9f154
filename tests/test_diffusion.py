"""DiffusersGenerator on a tiny random-weight Stable Diffusion pipeline, built and saved here.

No network and no downloaded weights: the pipeline is made from configs (as diffusers' own
tests do, `evals.tiny_diffusion`), saved with `save_pretrained` and loaded back through the
generator's real path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from tools.errors import LineError  # noqa: E402
from tools.generators.base import ImageGenerator, Interpretation  # noqa: E402
from tools.generators.diffusion import TEMPLATE_DIR, DiffusersGenerator  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tiny_pipeline) -> Path:
    return tiny_pipeline


@pytest.fixture(scope="module")
def gen(tiny_pipeline_dir) -> DiffusersGenerator:
    return DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE, batch_size=4)


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_follows_the_protocol(gen):
    assert isinstance(gen, ImageGenerator)
    assert gen.vocabulary() == {}


def test_images_are_rgb_at_requested_size(gen):
    images = gen.render([gen.prompt("cat", 0), gen.prompt("dog", 1)], [0, 1])
    assert len(images) == 2
    for im in images:
        assert im.mode == "RGB"
        assert im.size == (SIZE, SIZE)


def test_deterministic_per_prompt_and_seed(gen, tiny_pipeline_dir):
    prompt = gen.prompt("striped cat", 7)
    first = _pixels(gen.render([prompt], [7]))[0]
    again = _pixels(gen.render([prompt], [7]))[0]
    fresh = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE, batch_size=1)
    reloaded = _pixels(fresh.render([prompt], [7]))[0]
    assert np.array_equal(first, again)
    assert np.array_equal(first, reloaded)


def test_different_seeds_and_prompts_give_different_images(gen):
    prompt = "a realistic photo of a cat, front view, natural lighting"
    a, b = _pixels(gen.render([prompt, prompt], [1, 2]))
    assert not np.array_equal(a, b)
    c, d = _pixels(gen.render([prompt, "a realistic photo of a zebra, front view, natural lighting"], [3, 3]))
    assert not np.array_equal(c, d)


def test_batches_return_all_images_in_order_equal_to_unbatched(gen, tiny_pipeline_dir):
    concepts = ["cat", "red car", "striped shirt"]
    seeds = [11, 12, 13]
    batched = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE, batch_size=2)
    prompts = [batched.prompt(c, s) for c, s in zip(concepts, seeds)]
    got = _pixels(batched.render(prompts, seeds))  # batches of 2 and 1
    want = [_pixels(gen.render([p], [s]))[0] for p, s in zip(prompts, seeds)]  # one at a time
    assert len(got) == 3
    for g, w in zip(got, want):
        assert g.shape == w.shape == (SIZE, SIZE, 3)
        # same noise and prompt; batched float math may round a pixel by one level at most
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 1
    # the order is kept: each image is nearest its own unbatched twin
    for i, g in enumerate(got):
        errors = [np.abs(g.astype(int) - w.astype(int)).sum() for w in want]
        assert int(np.argmin(errors)) == i


def test_render_checks_lengths_and_accepts_nothing(gen):
    assert gen.render([], []) == []
    with pytest.raises(ValueError):
        gen.render(["a"], [1, 2])


def test_prompt_is_deterministic_and_follows_the_template_files():
    gen = DiffusersGenerator()  # lazy: no weights are needed for prompts
    template = (TEMPLATE_DIR / "line_image.txt").read_text(encoding="utf-8").strip()
    angles = (TEMPLATE_DIR / "angles.txt").read_text(encoding="utf-8").split("\n")
    lightings = (TEMPLATE_DIR / "lightings.txt").read_text(encoding="utf-8").split("\n")
    assert gen.prompt("striped cat", 3) == gen.prompt("striped cat", 3)
    prompts = {gen.prompt("striped cat", seed) for seed in range(40)}
    assert len(prompts) > 1  # angle and lighting vary with the seed
    pattern = "^" + re.escape(template).replace(r"\{concept\}", "(.*)").replace(r"\{angle\}", "(.*)").replace(
        r"\{lighting\}", "(.*)"
    ) + "$"
    for p in prompts:
        m = re.match(pattern, p)
        assert m, p
        concept, angle, lighting = m.groups()
        assert concept == "a striped cat"
        assert angle in angles and lighting in lightings


def test_prompt_uses_a_custom_template_dir(tmp_path):
    (tmp_path / "line_image.txt").write_text("{concept} | {angle} | {lighting}\n", encoding="utf-8")
    (tmp_path / "angles.txt").write_text("top\n", encoding="utf-8")
    (tmp_path / "lightings.txt").write_text("# comment\ndim\n\n", encoding="utf-8")
    gen = DiffusersGenerator(template_dir=tmp_path)
    assert gen.prompt("  red   car ", 5) == "a red car | top | dim"
    assert gen.template_version != DiffusersGenerator().template_version
    assert f"template={gen.template_version}" in gen.id


def test_bad_template_dir_raises_line_error(tmp_path):
    with pytest.raises(LineError):
        DiffusersGenerator(template_dir=tmp_path)
    (tmp_path / "line_image.txt").write_text("a photo of {thing}\n", encoding="utf-8")
    (tmp_path / "angles.txt").write_text("top\n", encoding="utf-8")
    (tmp_path / "lightings.txt").write_text("dim\n", encoding="utf-8")
    with pytest.raises(LineError):
        DiffusersGenerator(template_dir=tmp_path)


def test_id_names_every_setting():
    gen = DiffusersGenerator()
    assert "stabilityai/sd-turbo" in gen.id and "steps=1" in gen.id and "size=512" in gen.id
    assert "guidance=0" in gen.id and gen.template_version in gen.id
    assert "|fp32|cpu|" in gen.id  # "auto" on a machine without a GPU
    assert DiffusersGenerator(dtype="bfloat16").id != gen.id
    assert DiffusersGenerator(steps=2).id != gen.id
    assert DiffusersGenerator(size=256).id != gen.id
    assert DiffusersGenerator(guidance_scale=1.5).id != gen.id
    assert DiffusersGenerator(batch_size=8).id == gen.id  # batching does not change pixels


def test_interpret_is_open_vocabulary():
    gen = DiffusersGenerator()
    got = gen.interpret("Striped  zebra-like cat")
    assert got == Interpretation("Striped  zebra-like cat", ["Striped", "zebra-like", "cat"], [], None)
    assert got.drawable
    assert not gen.interpret("  ").drawable


def test_ablate_removes_the_concept_words():
    gen = DiffusersGenerator()
    prompt = "a realistic photo of a striped cat, side view, natural lighting"
    assert gen.ablate(prompt, "striped") == "a realistic photo of a cat, side view, natural lighting"
    assert gen.ablate(prompt, "STRIPED") == "a realistic photo of a cat, side view, natural lighting"
    assert gen.ablate(prompt, "striped cat") == "a realistic photo of a scene, side view, natural lighting"
    # template words are not the concept's: only the subject is edited
    assert gen.ablate(prompt, "natural view") == prompt
    for seed in range(10):
        p = gen.prompt("dog on grass", seed)
        ablated = gen.ablate(p, "grass")
        assert "grass" not in ablated and "dog on" in ablated
        assert ablated == gen.prompt("dog on", seed)
    # any other prompt: words removed wherever they are, commas and spaces tidied
    assert gen.ablate("red car, blue sky, sunny", "blue sky") == "red car, sunny"


def test_offline_hub_id_not_cached_raises_line_error_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = "line-agent-tests/not-a-cached-model"
    gen = DiffusersGenerator(model=model, size=SIZE)  # lazy: nothing is loaded yet
    with pytest.raises(LineError) as info:
        gen.render(["a cat"], [0])
    message = str(info.value)
    assert model in message
    assert "hf download" in message and "--generator diffusers:" in message and "huggingface-cli" not in message


def test_folder_that_is_not_a_pipeline_raises_line_error(tmp_path):
    (tmp_path / "model_index.json").write_text("not json at all", encoding="utf-8")
    (tmp_path / "weights.bin").write_bytes(b"\0garbage")
    with pytest.raises(LineError) as info:
        DiffusersGenerator(model=str(tmp_path), size=SIZE).render(["a cat"], [0])
    assert str(tmp_path) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LineError):
        DiffusersGenerator(model=str(empty), size=SIZE).render(["a cat"], [0])
    with pytest.raises(LineError):
        DiffusersGenerator(model=str(tmp_path / "missing" / "folder"), size=SIZE).render(["a cat"], [0])


# --- the prompt's article (issue 14, item 7) -------------------------------------------------
@pytest.mark.parametrize("concept, subject", [
    ("octagons", "octagons"), ("sand", "sand"), ("cat", "a cat"), ("owl", "an owl"), ("a cat", "a cat"),
    ("red polka dots", "red polka dots"), ("dog on grass", "a dog on grass"), ("pile of sand", "a pile of sand"),
    ("the eiffel tower", "the eiffel tower"), ("two dogs", "two dogs"), ("mice", "mice"), ("bus", "a bus"),
    ("glass", "glass"), ("green grass", "green grass"), ("red", "red"), ("umbrella", "an umbrella"),
    ("pair of shoes", "a pair of shoes"), ("lots of sand", "lots of sand"),
])
def test_the_prompt_gives_each_concept_the_article_it_takes(concept, subject):
    gen = DiffusersGenerator()
    prompt = gen.prompt(concept, 3)
    assert prompt.startswith(f"a realistic photo of {subject}, "), prompt
    assert gen.ablate(prompt, concept.split()[-1]).count(" of ") >= 1  # the ablated prompt is still a prompt


def test_ablation_gives_the_remaining_subject_its_article():
    gen = DiffusersGenerator()
    assert gen.ablate(gen.prompt("striped owls", 1), "striped") == gen.prompt("owls", 1)
    assert gen.ablate(gen.prompt("sand castle", 1), "castle") == gen.prompt("sand", 1)
    assert gen.ablate(gen.prompt("orange umbrella", 1), "orange") == gen.prompt("umbrella", 1)


# --- device, precision, batches (issue 14, items 1 and 2) ------------------------------------
def test_auto_device_and_precision_resolve_for_this_machine():
    gen = DiffusersGenerator()
    assert (gen.device, gen.dtype) == ("cuda", "float16") if torch.cuda.is_available() else ("cpu", "float32")
    assert DiffusersGenerator(device="cpu", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(LineError, match="generator.dtype"):
        DiffusersGenerator(dtype="float8")
    with pytest.raises(LineError, match="batch_size"):
        DiffusersGenerator(batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the advice given where there is no GPU")
def test_cuda_without_a_gpu_is_one_clear_error_naming_the_setting_and_a_real_flag():
    with pytest.raises(LineError) as info:
        DiffusersGenerator(device="cuda").id
    assert "generator.device 'cuda'" in str(info.value) and "--device cpu" in str(info.value)
    with pytest.raises(LineError, match="unknown generator.device"):
        DiffusersGenerator(device="tpu:7").id


def test_batches_are_pipeline_batches_of_batch_size(tiny_pipeline_dir):
    gen = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE, batch_size=2)
    prompts, seeds = [gen.prompt(c, 0) for c in ("cat", "dog", "car", "tree", "sand")], [0, 1, 2, 3, 4]
    batches = [_pixels(b) for b in gen.batches(prompts, seeds)]
    assert [len(b) for b in batches] == [2, 2, 1]
    whole = _pixels(gen.render(prompts, seeds))
    assert all(np.array_equal(a, b) for a, b in zip([im for b in batches for im in b], whole))


def test_auto_batch_size_fits_the_free_memory(tiny_pipeline_dir):
    from tools import devices

    gen = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE)  # batch_size "auto"
    assert 1 <= gen.pipeline_batch_size() <= devices.MAX_AUTO_BATCH
    assert devices.auto_batch_size(free_bytes=8 << 30, bytes_per_image=1 << 30) == 4
    assert devices.auto_batch_size(free_bytes=1 << 20, bytes_per_image=1 << 30) == 1
    assert devices.auto_batch_size(free_bytes=1 << 40, bytes_per_image=1 << 20) == devices.MAX_AUTO_BATCH


def test_a_batch_that_runs_out_of_memory_is_halved_and_tried_again(tiny_pipeline_dir, monkeypatch):
    gen = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE, batch_size=8)
    pipe = gen._pipeline()
    sizes = []

    def small_memory(**kwargs):
        sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return pipe(**kwargs)

    monkeypatch.setattr(gen, "_pipe", small_memory)
    prompts, seeds = [gen.prompt("cat", s) for s in range(5)], list(range(5))
    images = gen.render(prompts, seeds)
    assert sizes == [5, 4, 2, 2, 1] and gen.pipeline_batch_size() == 2  # 8 -> 4 -> 2, kept
    assert [im.size for im in images] == [(SIZE, SIZE)] * 5  # every image, once (batches equal singles: above)

    def no_memory(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gen, "_pipe", no_memory)
    with pytest.raises(LineError, match="does not fit"):
        gen.render(prompts[:1], seeds[:1])


# --- a folder's fingerprint (item 5) ---------------------------------------------------------
def test_the_id_follows_the_weights_in_the_folder_not_its_name(tiny_pipeline_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "sd"
    shutil.copytree(tiny_pipeline_dir, copy)
    digest = lambda gen: gen.id.split("@")[1].split("|")[0]  # noqa: E731
    original = DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE)
    assert digest(DiffusersGenerator(model=str(copy), size=SIZE)) == digest(original)  # same weights, other place
    weights = next((copy / "unet").glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights)
    assert digest(DiffusersGenerator(model=str(copy), size=SIZE)) != digest(original)


# --- quiet loading (item 4) ------------------------------------------------------------------
def test_loading_is_quiet_unless_verbose(tiny_pipeline_dir, capfd, caplog):
    import logging

    def accelerate_notices() -> int:
        return sum("accelerate" in record.getMessage() for record in caplog.records)

    DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE).render(["a cat"], [0])
    err = capfd.readouterr().err
    assert accelerate_notices() == 0 and "Loading pipeline components" not in err and "torchvision" not in err
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # `line -v`
    try:
        DiffusersGenerator(model=str(tiny_pipeline_dir), size=SIZE).render(["a cat"], [0])
    finally:
        root.setLevel(level)
    assert accelerate_notices() == 1
