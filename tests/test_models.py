"""Target models and layer activations: fast and offline (tiny random models, local weights)."""

import copy
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools.activations import check_unit, layer_activations, layer_infos, reduce_output, unit_count
from tools.errors import LineError
from tools.models import (
    MODEL_SCHEMES,
    TargetModel,
    live_target_model,
    load_target_model,
    register_model_scheme,
)

REPO = Path(__file__).resolve().parents[1]
CNN = "tests.tiny_models:tiny_cnn"
VIT = "tests.tiny_models:tiny_vit"


def shared_data() -> Path:
    return Path(os.environ.get("LINE_SHARED_DATA") or REPO.parent / "shared" / "data")


def random_images(n: int, seed: int = 0, size=(40, 30)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def capture(model: TargetModel, layer: str, x: torch.Tensor):
    """The layer's raw output in a full, unhooked-by-us forward."""
    out = {}
    h = model.layer(layer).register_forward_hook(lambda m, i, o: out.setdefault("o", o))
    try:
        with torch.no_grad():
            model.module(x)
    finally:
        h.remove()
    return out["o"]


@pytest.fixture(scope="module")
def cnn() -> TargetModel:
    return load_target_model(CNN)


# --- package.module:factory -------------------------------------------------------------
def test_factory_loads_with_module_attributes(cnn):
    assert cnn.name == CNN
    assert not cnn.module.training
    assert (cnn.input_size, cnn.mean, cnn.std) == (32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert cnn.layer_names() == ["conv1", "relu1", "conv2", "relu2", "pool", "fc"]


def test_layers_list_shapes_and_units(cnn):
    info = {l.name: l for l in layer_infos(cnn)}
    assert list(info) == cnn.layer_names()
    assert info["conv1"].type == "Conv2d"
    assert info["conv1"].shape == (8, 32, 32) and info["conv1"].units == 8
    assert info["conv2"].shape == (16, 16, 16) and info["conv2"].units == 16
    assert info["pool"].shape == (16, 1, 1) and info["pool"].units == 16
    assert info["fc"].shape == (10,) and info["fc"].units == 10
    assert unit_count(cnn, "conv2") == 16


def test_preprocess_shape_and_normalisation(cnn):
    x = cnn.preprocess([Image.new("L", (50, 80), 128), Image.new("RGBA", (64, 32), (255, 0, 0, 255))])
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], (128 / 255 - 0.5) / 0.25), atol=1e-6)
    assert torch.allclose(x[1, 0], torch.full_like(x[1, 0], (1 - 0.5) / 0.25))
    assert torch.allclose(x[1, 1], torch.full_like(x[1, 1], -2.0))


def test_spatial_mean_equals_manual(cnn):
    x = cnn.preprocess(random_images(3))
    raw = capture(cnn, "conv2", x)
    assert raw.shape == (3, 16, 16, 16)
    acts = layer_activations(cnn, "conv2", x)
    assert acts.dtype == np.float32 and acts.shape == (3, 16)
    np.testing.assert_allclose(acts, raw.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_pil_images_equal_preprocessed_tensor(cnn):
    imgs = random_images(4)
    np.testing.assert_array_equal(layer_activations(cnn, "conv1", imgs), layer_activations(cnn, "conv1", cnn.preprocess(imgs)))


def test_batching_invariance(cnn):
    imgs = random_images(7, seed=1)
    batched = layer_activations(cnn, "relu2", imgs, batch_size=3)
    single = np.concatenate([layer_activations(cnn, "relu2", [im], batch_size=1) for im in imgs])
    assert batched.shape == (7, 16)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_a_cpu_forward_is_sized_to_the_caches_and_channels_last_gives_the_same_activations(cnn):
    """On a CPU a batch holds CPU_BATCH_PIXELS of input (4 images at 224 px: larger batches
    spill the caches, BENCHMARKS.md); `batch_size` overrides it. A model run channels-last
    gives the activations it gives contiguous."""
    import dataclasses

    from tools.models.target import CPU_BATCH_PIXELS, finished

    assert cnn.device == "cpu" and cnn.forward_batch == CPU_BATCH_PIXELS // 32**2
    assert dataclasses.replace(cnn, input_size=224).forward_batch == 4
    assert dataclasses.replace(cnn, batch_size=7).forward_batch == 7
    imgs = random_images(5, seed=2)
    last = finished(dataclasses.replace(cnn, module=copy.deepcopy(cnn.module), channels_last=True), cnn.name, "cpu")
    assert last.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(layer_activations(last, "relu2", imgs), layer_activations(cnn, "relu2", imgs),
                               rtol=1e-5, atol=1e-6)


def test_early_stop_skips_later_layers_and_keeps_results(cnn):
    calls = []
    h = cnn.layer("fc").register_forward_hook(lambda *a: calls.append(1))
    try:
        x = cnn.preprocess(random_images(2))
        acts = layer_activations(cnn, "conv1", x)
        assert calls == []  # stopped right after conv1
        expected = capture(cnn, "conv1", x).mean(dim=(2, 3)).numpy()  # full forward
        assert calls == [1]
    finally:
        h.remove()
    np.testing.assert_allclose(acts, expected, rtol=1e-5, atol=1e-6)
    assert not cnn.layer("conv1")._forward_hooks  # our hook was removed
    # the full model still works after an early stop
    assert cnn.module(x).shape == (2, 10)


def test_empty_image_list(cnn):
    assert layer_activations(cnn, "conv2", []).shape == (0, 16)


def test_concurrent_layers_match_serial(cnn):
    x = cnn.preprocess(random_images(6, seed=2))
    layers = ["conv1", "relu1", "conv2", "relu2", "pool", "fc"] * 2
    serial = {l: layer_activations(cnn, l, x, batch_size=2) for l in layers}
    results, errors = {}, []

    def work(i, layer):
        try:
            results[i] = layer_activations(cnn, layer, x, batch_size=2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, l)) for i, l in enumerate(layers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, l in enumerate(layers):
        np.testing.assert_array_equal(results[i], serial[l])


def test_unknown_layer_lists_near_names(cnn):
    with pytest.raises(LineError) as err:
        cnn.layer("conv3")
    msg = str(err.value)
    assert "conv3" in msg and "conv1" in msg and "conv2" in msg
    assert f"line layers --model {CNN}" in msg
    with pytest.raises(LineError):
        layer_activations(cnn, "nope", random_images(1))


def test_unit_out_of_range(cnn):
    assert check_unit(cnn, "conv2", 15) == 15
    with pytest.raises(LineError) as err:
        check_unit(cnn, "conv2", 9999)
    assert "unit 9999 is out of range for layer conv2 (16 units: 0..15)" in str(err.value)
    with pytest.raises(LineError):
        check_unit(cnn, "conv2", -1)


def test_token_model_uses_cls_token():
    vit = load_target_model(VIT)
    x = vit.preprocess(random_images(3))
    raw = capture(vit, "blocks.0", x)
    assert raw.shape == (3, 17, 24)
    acts = layer_activations(vit, "blocks.0", x)
    np.testing.assert_allclose(acts, raw[:, 0, :].numpy(), rtol=1e-4, atol=1e-5)
    assert {l.name: l.units for l in layer_infos(vit)}["blocks.1"] == 24


def test_reduce_output_forms():
    t4, t3, t2 = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 7), torch.randn(2, 9)
    assert torch.equal(reduce_output(t4), t4.mean(dim=(2, 3)))
    assert torch.equal(reduce_output((t3, None)), t3[:, 0, :])
    assert torch.equal(reduce_output([t2]), t2)
    assert torch.equal(reduce_output(types.SimpleNamespace(last_hidden_state=t3)), t3[:, 0, :])
    assert torch.equal(reduce_output({"logits": t2, "other": t3}), t2)
    for bad in (None, torch.randn(5), torch.randn(1, 2, 3, 4, 5), ()):
        with pytest.raises(LineError):
            reduce_output(bad)


def test_factory_from_file_and_target_model_result(tmp_path):
    f = tmp_path / "my_net.py"
    f.write_text(
        "import torch\n"
        "from tools.models import TargetModel\n"
        "input_size = 16\n"
        "def net():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
        "def wrapped():\n    return TargetModel(name='x', module=net(), input_size=20, mean=(0, 0, 0), std=(1, 1, 1))\n"
    )
    m = load_target_model(f"{f}:net")
    assert m.input_size == 16 and m.mean == (0.485, 0.456, 0.406)
    assert layer_activations(m, "0", random_images(2)).shape == (2, 4)
    w = load_target_model(f"{f}:wrapped")
    assert (w.name, w.input_size, w.std) == (f"{f}:wrapped", 20, (1.0, 1.0, 1.0))


def test_factory_errors():
    with pytest.raises(LineError, match="has no function"):
        load_target_model("tests.tiny_models:tiny_cnnn")
    with pytest.raises(LineError, match="not a torch.nn.Module"):
        load_target_model("tests.tiny_models:not_a_model")
    with pytest.raises(LineError, match="cannot import"):
        load_target_model("tests.no_such_module:f")


def test_unknown_spec_lists_forms():
    with pytest.raises(LineError) as err:
        load_target_model("resnet-9000")
    msg = str(err.value)
    for form in ("efficientnet-lite0", "timm:<name>", "hf:<hub id or local folder>", "package.module:factory"):
        assert form in msg
    with pytest.raises(LineError):
        load_target_model("weird:thing/with spaces")


def test_register_model_scheme(monkeypatch):
    monkeypatch.setitem(MODEL_SCHEMES, "toy", None)
    register_model_scheme("toy", lambda rest, device: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)))
    m = load_target_model("toy:suite-a")
    assert m.name == "toy:suite-a" and m.input_size == 224
    assert "toy:..." in str(pytest.raises(LineError, load_target_model, "zzz").value)


def test_planted_scheme_comes_from_the_evals_entry_point_and_tools_never_import_evals():
    """tools.models finds `planted:` through the `line_agent.models` entry point, on first use."""
    code = ("import sys, tools.models as m; assert not [n for n in sys.modules if n.startswith('evals')]; "
            "assert 'planted:...' in m.accepted_forms() and 'planted' not in m.MODEL_SCHEMES; "
            "from tools.activations import layer_infos; t = m.load_target_model('planted:tiny'); print(t.name, layer_infos(t)[0].name, 'evals.planted' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["planted:tiny", "units", "True"]


def test_a_scheme_whose_plugin_cannot_be_imported_is_a_clear_error(monkeypatch):
    from importlib.metadata import EntryPoint

    import tools.models.registry as registry

    broken = EntryPoint(name="broken", value="no_such_package.models:load", group=registry.PLUGIN_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group, name=None: [broken] if name in (None, "broken") else [])
    with pytest.raises(LineError, match="model scheme 'broken'.*cannot be imported"):
        load_target_model("broken:x")
    assert "broken" not in MODEL_SCHEMES


# --- timm (optional, faked here) ----------------------------------------------------------
def fake_timm(fail: Exception | None = None):
    mod = types.ModuleType("timm")

    def create_model(name, pretrained=False):
        if fail is not None:
            raise fail
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())
        net.pretrained_cfg = {"input_size": (3, 64, 64), "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "interpolation": "bicubic", "crop_pct": 0.9}
        return net

    mod.create_model = create_model
    mod.list_models = lambda pretrained=False: ["resnet50.a1_in1k", "resnet18.a1_in1k"]
    return mod


def test_timm_uses_pretrained_cfg(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", fake_timm())
    m = load_target_model("timm:resnet18.a1_in1k")
    assert (m.name, m.input_size, m.mean, m.std, m.interpolation, m.crop_pct) == (
        "timm:resnet18.a1_in1k", 64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bicubic", 0.9)
    assert m.preprocess(random_images(1, size=(100, 80))).shape == (1, 3, 64, 64)


def test_timm_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import fails
    with pytest.raises(LineError, match="pip install timm"):
        load_target_model("timm:resnet18")
    monkeypatch.setitem(sys.modules, "timm", fake_timm(OSError("We couldn't connect to https://huggingface.co")))
    with pytest.raises(LineError) as err:
        load_target_model("timm:resnet18.a1_in1k")
    assert "hf download timm/resnet18.a1_in1k" in str(err.value)
    assert "package.module:factory" in str(err.value)
    monkeypatch.setitem(sys.modules, "timm", fake_timm(RuntimeError("Unknown model (resnet50.a1_inik)")))
    with pytest.raises(LineError, match="resnet50.a1_in1k"):
        load_target_model("timm:resnet50.a1_inik")


# --- hf:<folder> / hf:<hub id> ------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8)
    folder = tmp_path_factory.mktemp("tiny-vit")
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]).save_pretrained(folder)
    return folder


def test_hf_folder_cls_reduction(vit_folder):
    m = load_target_model(f"hf:{vit_folder}")
    assert (m.input_size, m.mean, m.std) == (32, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    names = m.layer_names()
    layer = next(n for n in ("vit.encoder.layer.0", "vit.layers.0") if n in names)  # transformers 4 / 5
    assert unit_count(m, layer) == 32
    x = m.preprocess(random_images(3))
    acts = layer_activations(m, layer, x)
    with torch.no_grad():
        hidden = m.module(x, output_hidden_states=True).hidden_states[1]
    assert acts.shape == (3, 32)
    np.testing.assert_allclose(acts, hidden[:, 0, :].numpy(), rtol=1e-5, atol=1e-6)
    assert {l.name: l.units for l in layer_infos(m)}["classifier"] == 2


def test_hf_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-line-test-hf-home")
    with pytest.raises(LineError) as err:
        load_target_model("hf:someone/no-such-vit-model")
    msg = str(err.value)
    assert "someone/no-such-vit-model" in msg
    assert "hf download someone/no-such-vit-model --local-dir" in msg and "hf:<folder>" in msg


def test_hf_missing_folder(tmp_path):
    with pytest.raises(LineError, match="no model folder"):
        load_target_model(f"hf:{tmp_path}/absent")
    with pytest.raises(LineError, match="config.json"):
        load_target_model(f"hf:{tmp_path}")


# --- live:<class>@<fingerprint>: a module in memory ---------------------------------------
def test_a_live_module_is_named_by_its_weights_and_preprocessing():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    stats = dict(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    live = live_target_model(net, **stats)
    assert live.name.startswith("live:Sequential@") and not net.training
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    twin.load_state_dict(net.state_dict())
    assert live_target_model(twin, **stats).name == live.name  # same class, same weights: same activations
    assert live_target_model(net, **{**stats, "input_size": 48}).name != live.name
    with torch.no_grad():
        net[0].bias.add_(1.0)
    assert live_target_model(net, **stats).name != live.name
    with pytest.raises(LineError, match=r"needs preprocess= .* \(mean, std missing\)"):
        live_target_model(net, input_size=32)
    with pytest.raises(LineError, match="not a torch.nn.Module"):
        live_target_model("efficientnet-lite0", **stats)
    with pytest.raises(LineError, match="live:Sequential@"):
        load_target_model(live.name)  # a module in memory cannot be loaded by name


def test_a_live_module_with_its_own_preprocess():
    def preprocess(image):
        return torch.from_numpy(np.asarray(image.resize((24, 24)), dtype=np.float32) / 255).permute(2, 0, 1)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    live = live_target_model(net, preprocess=preprocess)
    assert live.preprocess(random_images(2)).shape == (2, 3, 24, 24)
    assert unit_count(live, "0") == 4  # the dummy input goes through preprocess too
    other = live_target_model(net, preprocess=lambda image: preprocess(image.convert("L").convert("RGB")))
    assert other.name != live.name
    broken = live_target_model(net, preprocess=lambda image: torch.zeros(24, 24))
    with pytest.raises(LineError, match=r"preprocess gave \(24, 24\)"):
        broken.preprocess(random_images(1))


def test_live_timm_and_transformers_modules_bring_their_preprocessing(monkeypatch, vit_folder):
    monkeypatch.setitem(sys.modules, "timm", fake_timm())
    timm_net = sys.modules["timm"].create_model("resnet18.a1_in1k")
    live = live_target_model(timm_net)
    assert (live.input_size, live.mean, live.std, live.crop_pct) == (64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 0.9)
    from transformers import ViTForImageClassification

    vit = live_target_model(ViTForImageClassification.from_pretrained(vit_folder, local_files_only=True))
    assert (vit.input_size, vit.mean, vit.std) == (32, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    assert live_target_model(vit.module, input_size=48).input_size == 48  # what is given wins


# --- efficientnet-lite0, real weights from the installed package ------------------------
@pytest.fixture(scope="module")
def effnet() -> TargetModel:
    return load_target_model("efficientnet-lite0")


def test_efficientnet_lite0_layers(effnet):
    assert effnet.name == "efficientnet-lite0" and effnet.input_size == 224
    assert unit_count(effnet, "_blocks.6") == 80
    assert unit_count(effnet, "_conv_head") == 1280
    with pytest.raises(LineError) as err:
        check_unit(effnet, "_blocks.6", 9999)
    assert "unit 9999 is out of range for layer _blocks.6 (80 units: 0..79)" in str(err.value)
    with pytest.raises(LineError, match="_blocks.6"):
        effnet.layer("_block.6")


def test_efficientnet_lite0_classifies_a_real_photo(effnet):
    photo = shared_data() / "imagenet-samples" / "n07920052_espresso.jpg"
    if not photo.is_file():
        pytest.skip(f"shared data not found at {photo.parent} (set LINE_SHARED_DATA)")
    with Image.open(photo) as img:
        x = effnet.preprocess([img])
    with torch.inference_mode():
        logits = effnet.module(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == 967  # espresso
    # the logits layer through layer_activations agrees with the plain forward
    np.testing.assert_allclose(layer_activations(effnet, "_fc", x), logits.numpy(), rtol=1e-4, atol=1e-4)
