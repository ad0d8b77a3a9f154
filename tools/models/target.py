"""The target model as the rest of the code sees it: a torch module in eval mode, how
images reach it (`TargetModel.preprocess`), its layers by name, and what hooked forwards
learned about those layers (`LayerCache`, filled by `tools.activations`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from tools.errors import LineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CPU_BATCH_PIXELS = 4 * 224 * 224  # a CPU forward's input pixels: 4 images at 224 px, 49 at 64 px
GPU_BATCH = 32

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...]  # output shape per image, e.g. (80, 14, 14)
    units: int  # units after reduction (channels, or the token width)


@dataclass
class LayerCache:
    """What hooked forwards learned about a model's layers, kept with the model.

    `tools.activations` writes it (`layer_infos`, `unit_count`, `layer_activations`) and
    reads it back; anyone may read it. It describes the model's module with its
    preprocessing, so it stays valid as long as the `TargetModel` wraps the same module.
    """

    units: dict[str, int] = field(default_factory=dict)  # layer name -> units after reduction
    infos: list[LayerInfo] | None = None  # every layer with a tensor output, in module order; None until listed


@dataclass
class TargetModel:
    name: str  # the spec it was loaded from, used in cache keys
    module: torch.nn.Module  # eval mode
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # PIL resampling used by `preprocess`
    crop_pct: float = 1.0  # resize the short side to input_size / crop_pct, then center-crop
    device: str = "cpu"
    transform: Callable[[Image.Image], torch.Tensor] | None = None  # a live module's own preprocess, per image
    batch_size: int | None = None  # images per forward; None: `forward_batch` sizes it to the device
    channels_last: bool = False  # a conv net that runs faster with channels-last tensors (its loader knows)
    layer_cache: LayerCache = field(default_factory=LayerCache, init=False, repr=False, compare=False)

    @property
    def forward_batch(self) -> int:
        """Images per forward: `batch_size` where set; on a CPU, as many as keep a batch's
        input within CPU_BATCH_PIXELS (EfficientNet-Lite0 on 2 cores: 26 ms an image in
        batches of 4, 62 ms in batches of 32, whose activations spill the caches:
        BENCHMARKS.md); on an accelerator, GPU_BATCH."""
        if self.batch_size:
            return int(self.batch_size)
        if self.device.startswith("cpu"):
            return max(1, CPU_BATCH_PIXELS // max(1, int(self.input_size) ** 2))
        return GPU_BATCH

    # --- images -------------------------------------------------------------------------
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """N x 3 x S x S float32: RGB, short side resized, center crop, normalised (or
        `transform` applied to each image)."""
        if self.transform is not None and images:
            return torch.stack([_transformed(self.transform, img.convert("RGB")) for img in images])
        size = int(self.input_size)
        short = max(size, int(round(size / self.crop_pct)))
        resample = _RESAMPLE.get(self.interpolation, Image.Resampling.BILINEAR)
        arrays = []
        for img in images:
            img = img.convert("RGB")
            w, h = img.size
            if w <= h:
                nw, nh = short, max(short, int(round(h * short / w)))
            else:
                nw, nh = max(short, int(round(w * short / h))), short
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), resample)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            arrays.append(np.asarray(img, dtype=np.uint8))
        if not arrays:
            return torch.empty(0, 3, size, size)
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    def input_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part of a `width` x `height` image the model sees (left, top, right, bottom):
        `preprocess`'s center crop (a live module's own preprocess is taken to center-crop
        the short side too)."""
        side = min(width, height) * (1.0 if self.transform is not None else min(1.0, float(self.crop_pct)))
        left, top = (width - side) / 2, (height - side) / 2
        return round(left), round(top), round(left + side), round(top + side)

    # --- layers (their outputs and units: `tools.activations.layer_infos`) --------------
    def layer_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def layer(self, name: str) -> torch.nn.Module:
        modules = dict(self.module.named_modules())
        if name and name in modules:
            return modules[name]
        names = [n for n in modules if n]
        near = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        if not near:  # fall back to the top-level children
            near = [n for n in names if "." not in n][:8]
        raise LineError(
            f"unknown layer {name!r} for model {self.name} (nearest: {', '.join(near) or 'none'}).",
            f"Use one of those, or list all layers with `line layers --model {self.name}`.",
        )

    def dummy_input(self, n: int = 1) -> torch.Tensor:
        if self.transform is not None:
            blank = Image.new("RGB", (self.input_size, self.input_size))
            return self.preprocess([blank] * n).to(device=self.device, dtype=self.dtype)
        return torch.zeros(n, 3, self.input_size, self.input_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32


def finished(loaded: TargetModel | torch.nn.Module, spec: str, device: str) -> TargetModel:
    """What a loader gave, as a `TargetModel` named `spec`, on `device`, in eval mode (a
    bare module gets 224 px and ImageNet statistics)."""
    if isinstance(loaded, TargetModel):
        tm = loaded
    elif isinstance(loaded, torch.nn.Module):
        tm = TargetModel(name=spec, module=loaded)
    else:
        raise LineError(
            f"model {spec!r} gave a {type(loaded).__name__}, not a torch.nn.Module.",
            "Make the loader or factory return an nn.Module (or a TargetModel).",
        )
    tm.name = spec
    try:
        tm.module = tm.module.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise LineError(f"cannot move model {spec!r} to device {device!r} ({exc}).",
                        'Set device = "cpu" in the config, or pass --device cpu.') from exc
    tm.device = device
    if tm.channels_last:
        tm.module = tm.module.to(memory_format=torch.channels_last)
    tm.module.eval()
    tm.input_size = _checked_size(tm.input_size, spec)
    tm.mean = _three_numbers(tm.mean, "mean", spec)  # type: ignore[assignment]
    tm.std = _three_numbers(tm.std, "std", spec, positive=True)  # type: ignore[assignment]
    return tm


MAX_INPUT_SIZE = 4096  # pixels a side: beyond, one image's tensor alone takes hundreds of MB


def _checked_size(size: object, spec: str) -> int:
    """A model's input_size: a whole number of pixels, 1..MAX_INPUT_SIZE, or a LineError."""
    ok = isinstance(size, (int, float, np.integer)) and not isinstance(size, bool) and float(size).is_integer()
    if not (ok and 1 <= int(size) <= MAX_INPUT_SIZE):  # type: ignore[arg-type]
        raise LineError(f"model {spec}: input_size={size!r} is not a whole number of pixels from 1 to {MAX_INPUT_SIZE}.",
                        "Set input_size to the side the model takes, e.g. input_size = 224.")
    return int(size)  # type: ignore[arg-type]


def _three_numbers(values: object, key: str, spec: str, positive: bool = False) -> tuple[float, float, float]:
    """A model's mean or std: three finite numbers, one per RGB channel (std above 0), or a LineError."""
    try:
        numbers = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(np.isfinite(numbers)) or (positive and min(numbers) <= 0):
        what = "three numbers above 0" if positive else "three finite numbers"
        raise LineError(f"model {spec}: {key}={values!r} is not {what} (one per RGB channel).",
                        f"Set e.g. {key} = {IMAGENET_STD if positive else IMAGENET_MEAN}"
                        + (" (dividing by a std of 0 makes every activation NaN)." if positive else "."))
    return numbers  # type: ignore[return-value]


def _transformed(transform: Callable[[Image.Image], torch.Tensor], image: Image.Image) -> torch.Tensor:
    """A live module's preprocess applied to one image: a 3 x H x W tensor, or a LineError."""
    x = transform(image)
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise LineError(f"preprocess gave {shape} for an image, not a 3 x H x W tensor.",
                        "Make preprocess return a float tensor of shape 3 x H x W (e.g. torchvision's ToTensor + Normalize).")
    return x.float()
