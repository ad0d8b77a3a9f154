"""Where torch work runs, and in what precision: "auto" resolved for this machine.

`resolve_device("auto")` is CUDA when torch sees a GPU, else the CPU; `resolve_dtype("auto",
device)` is float16 on CUDA, float32 elsewhere (float16 on a CPU is about 3x slower).
`auto_batch_size` sizes image batches to the memory left on the device. Each error names
the setting to change (`device`, `generator.device`, ...).
"""

from __future__ import annotations

import os
from typing import Any

AUTO = "auto"
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}  # name -> short form in cache keys
MAX_AUTO_BATCH = 16
MEMORY_SHARE = 0.5  # of the free memory an automatic batch may take
RUNNABLE = ("cpu", "cuda", "mps", "xpu")  # device types a model and a generator run on


def resolve_device(name: str, setting: str = "device") -> str:
    """`name` ("auto", "cpu", "cuda", "cuda:1", "mps") checked against this machine."""
    import torch

    name = (name or AUTO).strip().lower()
    if name == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    from tools.errors import LineError

    fix = f'Set {setting} = "auto" (CUDA when there is a GPU, else the CPU) or "cpu"; with a flag: --device cpu.'
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise LineError(f"unknown {setting} {name!r}.", fix) from error
    if device.type not in RUNNABLE:  # meta holds no data; hpu, xla, ... need packages line does not drive
        raise LineError(f"{setting} {name!r}: line runs models on {', '.join(RUNNABLE)} only"
                        + (" (the meta device holds no data to compute on)." if device.type == "meta" else "."), fix)
    if device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise LineError(f"{setting} {name!r}: torch sees no Intel GPU here.", fix)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LineError(f"{setting} {name!r}: torch sees no CUDA GPU here (torch {torch.__version__}).", fix)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LineError(f"{setting} {name!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s).", fix)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise LineError(f"{setting} {name!r}: torch sees no Apple GPU here.", fix)
    return str(device)


def resolve_dtype(name: str, device: str, setting: str = "generator.dtype") -> str:
    """The precision's name: "auto" is float16 on CUDA, float32 elsewhere."""
    name = (name or AUTO).strip().lower()
    if name == AUTO:
        return "float16" if device.startswith("cuda") else "float32"
    if name not in DTYPES:
        from tools.errors import LineError

        raise LineError(f"unknown {setting} {name!r}.", f"Use auto, {', '.join(DTYPES)}.")
    return name


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def free_memory(device: str) -> int:
    """Bytes free on `device`: the GPU's free memory, or the machine's available memory."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


def auto_batch_size(free_bytes: int, bytes_per_image: float) -> int:
    """Images per batch that fit `MEMORY_SHARE` of `free_bytes`, from 1 to `MAX_AUTO_BATCH`."""
    return max(1, min(MAX_AUTO_BATCH, int(MEMORY_SHARE * free_bytes // max(bytes_per_image, 1.0))))
