"""``timm:<name>``: ``timm.create_model(name, pretrained=True)`` with the preprocessing of
its pretrained config (timm is optional; weights come from the Hugging Face cache)."""

from __future__ import annotations

import contextlib
import difflib

import torch

from tools.errors import LineError
from tools.models.target import IMAGENET_MEAN, IMAGENET_STD, TargetModel


def load_timm(name: str, device: str) -> TargetModel:
    if not name:
        raise LineError("empty timm model name.", "Use timm:<name>, for example timm:resnet50.a1_in1k.")
    try:
        import timm
    except ImportError as exc:
        raise LineError(f"timm:{name} needs timm, which is not installed.", "Run `pip install timm`.") from exc
    try:
        module = timm.create_model(name, pretrained=True)
    except LineError:
        raise
    except Exception as exc:  # unknown name, or weights not in the cache while offline
        text = str(exc)
        if "unknown model" in text.lower():
            near: list[str] = []
            with contextlib.suppress(Exception):
                near = difflib.get_close_matches(name, timm.list_models(pretrained=True), n=5, cutoff=0.6)
            raise LineError(
                f"timm has no model {name!r}" + (f" (nearest: {', '.join(near)})." if near else "."),
                "List names with `python -c \"import timm; print(timm.list_models(pretrained=True))\"`.",
            ) from exc
        hub_id = f"timm/{name}"
        with contextlib.suppress(Exception):
            cfg = timm.models.get_pretrained_cfg(name)
            hub_id = getattr(cfg, "hf_hub_id", None) or hub_id
        raise LineError(
            f"cannot load pretrained weights for timm:{name} ({type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}).",
            f"Download them where there is network (`hf download {hub_id}`; timm reads the "
            f"Hugging Face cache, HF_HOME or ~/.cache/huggingface) and copy the cache here, then use "
            f"timm:{name}; or load your own weights in a function and use package.module:factory.",
        ) from exc
    return TargetModel(name=f"timm:{name}", module=module, **timm_preprocessing(module))


def timm_preprocessing(module: torch.nn.Module) -> dict:
    """The TargetModel preprocessing fields of a timm model, from its pretrained config."""
    cfg = dict(getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {})
    input_size = cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224)
    return {
        "input_size": int(input_size[-1]),
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "crop_pct": float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 1.0),
    }
