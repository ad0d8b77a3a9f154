"""Where the unit fires (issue 23): the unit's activation map laid over an evidence image.

For a layer with a spatial map (a conv output, N x C x H x W) the unit's H x W map on each
shown image (`tools.engine.Engine.activation_maps`) is upsampled over the part of the image
the model sees (its input crop) and drawn as a heat layer: transparent where the map is at or
below zero, dark red to yellow up to the unit's `scale`. One scale per unit and page (the
largest map value among the label's images, its finalists' fresh images and the control
images shown with them), so the same colour means the same activation on every image of the
unit; brighter places elsewhere on the page are clipped to yellow. Layers without a spatial
map (ViT tokens, N x D) get no overlay. The reports show the overlay over each image
(hover to see the image alone).
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from tools.errors import LineError

if TYPE_CHECKING:
    from PIL import Image

OPACITY = 0.7  # of the heat layer where the map reaches the scale


def heat(image: Image.Image, amap: np.ndarray, scale: float, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """`image`'s model crop (`box`) at `size` px with `amap` over it, 0..`scale` as
    transparent..dark red..yellow."""
    from PIL import Image

    seen = np.asarray(image.convert("RGB").crop(box).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    level = Image.fromarray(np.clip(np.asarray(amap, dtype=np.float32) / scale, 0, 1), mode="F")
    a = np.asarray(level.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)[..., None].clip(0, 1)
    colour = np.concatenate([np.full_like(a, 120) + 135 * np.minimum(1, 2 * a), 255 * np.maximum(0, 2 * a - 1),
                             np.zeros_like(a)], axis=-1)
    out = seen * (1 - OPACITY * a) + colour * OPACITY * a
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def overlaid(engine, unit: int, groups: Sequence[list], loads: Mapping[str, Callable[[], Image.Image]], size: int,
             scale: float | None = None) -> tuple[list[list], float | None]:
    """`groups` of shots (NamedTuples with `key` and `overlay` fields) with their overlays
    filled in, and the unit's colour scale (`scale` where given, else the largest map value
    among them); the groups unchanged and None when the layer has no spatial map, the model
    may not be run (an untrusted run), or the unit never fires on them."""
    keys = list(dict.fromkeys(shot.key for group in groups for shot in group if shot.key and shot.key in loads))
    if not keys:
        return [list(g) for g in groups], None
    try:
        maps = engine.activation_maps(keys, lambda i: loads[keys[i]](), unit)
        model = engine.model if maps else None
    except LineError:  # an untrusted run's model, or a layer the model no longer has
        maps = None
    if not maps:
        return [list(g) for g in groups], None
    by_key = dict(zip(keys, maps))
    scale = scale if scale is not None else max(float(m.max()) for m in maps)
    if not scale > 0:
        return [list(g) for g in groups], None
    drawn: dict[str, str] = {}

    def one(shot):
        if shot.key not in by_key:
            return shot
        if shot.key not in drawn:
            image = loads[shot.key]()
            drawn[shot.key] = uri(heat(image, by_key[shot.key], scale, model.input_box(*image.size), size))
        return shot._replace(overlay=drawn[shot.key])

    return [[one(shot) for shot in group] for group in groups], scale
