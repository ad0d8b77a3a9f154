"""DiffusersGenerator on a tiny random-weight Stable Diffusion pipeline, built and saved here.

No network and no downloaded weights: the pipeline is made from configs (as diffusers' own
tests do), saved with `save_pretrained` and loaded back through the generator's real path.
"""

from __future__ import annotations

import json
import re
import string
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


def _write_tokenizer_files(folder: Path) -> None:
    """A tiny CLIP BPE vocabulary: letters, punctuation and all two-letter word endings."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    symbols = list(string.ascii_lowercase) + list(",.-'")
    for s in symbols:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    merges = ["#version: 0.2"]
    for a in string.ascii_lowercase:
        for b in string.ascii_lowercase:
            merges.append(f"{a} {b}</w>")
            vocab[f"{a}{b}</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )
    _write_tokenizer_files(root / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer-src"), model_max_length=77)
    assert len(tokenizer("a cat").input_ids) > 2  # the vocabulary really was read
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = root / "pipeline"
    pipe.save_pretrained(str(folder))
    return folder


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
        assert concept == "striped cat"
        assert angle in angles and lighting in lightings


def test_prompt_uses_a_custom_template_dir(tmp_path):
    (tmp_path / "line_image.txt").write_text("{concept} | {angle} | {lighting}\n", encoding="utf-8")
    (tmp_path / "angles.txt").write_text("top\n", encoding="utf-8")
    (tmp_path / "lightings.txt").write_text("# comment\ndim\n\n", encoding="utf-8")
    gen = DiffusersGenerator(template_dir=tmp_path)
    assert gen.prompt("  red   car ", 5) == "red car | top | dim"
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
    assert "huggingface-cli download" in message and "--generator diffusers:" in message


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
