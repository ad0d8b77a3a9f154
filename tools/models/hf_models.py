"""``hf:<hub id or local folder>``: a transformers image model (with an image-classification
head where it has one), preprocessed as its image processor config says; the local cache
first, the network only where the hub's host resolves."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from tools.errors import LineError
from tools.models.target import IMAGENET_MEAN, IMAGENET_STD, TargetModel


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable() -> bool:
    """Whether the Hugging Face endpoint's host name resolves (no network: skip the retries)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _hf_size(proc: dict) -> int | None:
    for key in ("crop_size", "size"):
        val = proc.get(key)
        if proc.get("do_center_crop") is False and key == "crop_size":
            continue
        if isinstance(val, int):
            return val
        if isinstance(val, dict):
            for k in ("height", "shortest_edge", "width"):
                if isinstance(val.get(k), int):
                    return val[k]
    return None


def load_hf(ref: str, device: str) -> TargetModel:
    if not ref:
        raise LineError("empty Hugging Face model.", "Use hf:<hub id> or hf:<local folder>.")
    path = Path(ref).expanduser()
    is_folder = path.is_dir()
    if not is_folder and (ref.startswith((".", "/", "~")) or ref.count("/") > 1):
        raise LineError(f"no model folder {ref!r}.", "Give an existing folder with config.json: hf:<folder>.")
    source = str(path) if is_folder else ref
    try:
        from transformers import AutoModel, AutoModelForImageClassification
    except ImportError as exc:
        raise LineError("hf: models need transformers, which is not installed.", "Run `pip install transformers`.") from exc

    def load(local_only: bool):
        try:
            return AutoModelForImageClassification.from_pretrained(source, local_files_only=local_only)
        except ValueError:  # no image-classification head for this architecture
            return AutoModel.from_pretrained(source, local_files_only=local_only)

    # the local cache first, then the network where there is one
    attempts = [True] if (is_folder or _offline() or not _hub_reachable()) else [True, False]
    module = None
    error: Exception | None = None
    local_only = True
    for local_only in attempts:
        try:
            module = load(local_only)
            break
        except Exception as exc:  # OSError for missing files, ValueError for unknown configs, ...
            error = exc
    if module is None:
        first = str(error).strip().splitlines()[0][:200] if error and str(error).strip() else type(error).__name__
        if is_folder:
            raise LineError(
                f"cannot load a transformers model from folder {source!r} ({first}).",
                "The folder needs config.json and weights, as written by save_pretrained or "
                "`hf download <id> --local-dir <folder>`.",
            ) from error
        raise LineError(
            f"Hugging Face model {ref!r} is not available offline ({first}).",
            f"Download it where there is network with `hf download {ref} --local-dir <folder>`, "
            "copy the folder here, then use hf:<folder>.",
        ) from error

    return TargetModel(name=f"hf:{ref}", module=module.float(), **hf_preprocessing(module, source, local_only))


def hf_preprocessing(module: torch.nn.Module, source: str, local_only: bool = True) -> dict:
    """The TargetModel preprocessing fields of a transformers model, from the image processor
    config at `source` (a folder or hub id), else its model config and ImageNet statistics."""
    proc: dict = {}
    with contextlib.suppress(Exception):
        from transformers.image_processing_base import ImageProcessingMixin

        proc, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=local_only)
    mean = proc.get("image_mean") or IMAGENET_MEAN
    std = proc.get("image_std") or IMAGENET_STD
    if proc.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if isinstance(mean, (int, float)):
        mean = (float(mean),) * 3
    if isinstance(std, (int, float)):
        std = (float(std),) * 3
    size = _hf_size(proc)
    if size is None:
        size = getattr(module.config, "image_size", None)
        size = size if isinstance(size, int) else 224
    resample = proc.get("resample")
    interpolation = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(resample, "bilinear")
    crop_pct = proc.get("crop_pct")
    crop_pct = float(crop_pct) if isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1 else 1.0
    return {"input_size": int(size), "mean": tuple(mean), "std": tuple(std), "interpolation": interpolation,
            "crop_pct": crop_pct}
