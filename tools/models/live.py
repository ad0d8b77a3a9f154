"""``live:<class>@<fingerprint>``: a torch module already in memory (a notebook's) as a
`TargetModel`; the fingerprint is a digest of its weights and preprocessing, so caches tell
modules (and weights) apart. The name cannot be loaded back: the module must be passed again."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from tools.devices import resolve_device
from tools.errors import LineError
from tools.fingerprint import fingerprint_live
from tools.models.hf_models import hf_preprocessing
from tools.models.target import TargetModel, finished
from tools.models.timm_models import timm_preprocessing


LIVE = "live"


def live_target_model(module: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
                      input_size: int | None = None, mean: tuple[float, float, float] | None = None,
                      std: tuple[float, float, float] | None = None, device: str | None = None) -> TargetModel:
    """A torch module already in memory as a TargetModel, named ``live:<class>@<fingerprint>``
    (`tools.fingerprint.fingerprint_live`: its weights and its preprocessing).

    Images reach it through `preprocess` (a callable from a PIL image to a 3 x H x W tensor),
    or resized to `input_size` and normalised with `mean` and `std`; timm and transformers
    modules bring their own where they are not given. The module stays on its device (or
    moves to `device`) and is put in eval mode."""
    if not isinstance(module, torch.nn.Module):
        raise LineError(f"model is a {type(module).__name__}, not a torch.nn.Module or a model spec.",
                        "Pass a torch module, or a spec string such as 'efficientnet-lite0' or 'timm:resnet50'.")
    if any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers()):
        raise LineError(f"the live {type(module).__name__} has its weights on the meta device: they hold no data to compute on.",
                        "Load its weights first (e.g. module.to_empty(device='cpu'), then load_state_dict), or pass a module on the CPU or a GPU.")
    given = {k: v for k, v in {"input_size": input_size, "mean": mean, "std": std}.items() if v is not None}
    fields = {**_inferred_preprocessing(module), **given}
    missing = [k for k in ("input_size", "mean", "std") if k not in fields]
    if preprocess is None and missing:
        raise LineError(f"the live {type(module).__name__} needs preprocess= (a callable on PIL images) or "
                        f"input_size=, mean= and std= ({', '.join(missing)} missing).",
                        "For an ImageNet model: input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225).")
    for key in ("mean", "std"):
        if key in fields and (not isinstance(fields[key], (tuple, list)) or len(fields[key]) != 3):
            raise LineError(f"{key}={fields[key]!r} is not three numbers (one per RGB channel).", f"Pass e.g. {key}=(0.5, 0.5, 0.5).")
    target = TargetModel(name="", module=module, transform=preprocess,
                         **{k: v for k, v in fields.items() if k not in missing})
    if preprocess is not None and not callable(preprocess):
        raise LineError(f"preprocess is a {type(preprocess).__name__}, not a callable.",
                        "Pass a function from a PIL image to a 3 x H x W tensor (e.g. a torchvision transform).")
    device = resolve_device(device) if device is not None else next((str(p.device) for p in module.parameters()), "cpu")
    spec = f"{LIVE}:{type(module).__name__}@{fingerprint_live(module, preprocess or _resize_text(target))}"
    return finished(target, spec, device)


def _inferred_preprocessing(module: torch.nn.Module) -> dict:
    """What timm and transformers modules say about their inputs; {} for other modules."""
    if getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None):
        return timm_preprocessing(module)
    source = getattr(getattr(module, "config", None), "_name_or_path", None)
    if source and type(module).__module__.startswith("transformers."):
        return hf_preprocessing(module, source)
    return {}


def _resize_text(target: TargetModel) -> str:
    return f"resize {target.input_size} crop {target.crop_pct} {target.interpolation} mean {target.mean} std {target.std}"


def needs_live_module(rest: str, device: str) -> TargetModel:
    raise LineError(f"model live:{rest} was a torch module in memory; it cannot be loaded from its name.",
                    "Pass the module again, e.g. line_agent.open_run(run_id, model=module).")
