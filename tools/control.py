"""Control sets: labelled images a unit is compared against.

Specs:
- `procedural:N` — N scenes from the procedural generator: N // 5 random concepts
  (deterministic), 5 seeds each (seeds from 10000 on); the concept is the class.
- `dir:PATH` — every image under PATH; the class is the sub-folder's name, or taken from file
  names like `<id>_<class>.jpg` (as in ImageNet sample folders), else the file's stem. A
  sub-folder named by an id (ImageNet val's `n01440764/`) takes its name from a mapping file
  at the top of PATH, `synset_words.txt` or `LOC_synset_mapping.txt` (lines `<id> <name>,
  <synonyms>`), where there is one.
- `auto` (settings only, resolved by `agent.runs.engine_factory.control_spec`) — `procedural:300` for
  the procedural generator; for a photo generator, natural photos with classes: the
  ImageNet samples of the shared data folder (`natural_images()`).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from tools.cache import DiskCache, bytes_key, content_key
from tools.errors import LineError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
IMAGES_PER_PROCEDURAL_CLASS = 5
# Control scenes use seeds apart from those of concept images (0, 1, ...), so that a
# concept named like a control class is scored on new images, not on the control's own.
CONTROL_SEED_OFFSET = 10_000
MAX_PROCEDURAL_IMAGES = 20_000
MIN_CONTROL_IMAGES = 8  # different images in a dir: control set
MAX_CONTROL_PIXELS = 64_000_000  # a larger photo is skipped (decoding one takes ~3 bytes a pixel)
AUTO = "auto"
DEFAULT_PROCEDURAL = "procedural:300"
NATURAL_SAMPLES = "imagenet-samples"  # 1000 photos named <wnid>_<class>.jpg, one per ImageNet class
ID_MAPPING_FILES = ("synset_words.txt", "LOC_synset_mapping.txt")


@dataclass
class ControlSet:
    """Images (by cache key) with their class labels; `load(i)` opens image i."""

    spec: str
    keys: list[str]
    labels: list[str]
    load: Callable[[int], Image.Image]
    skipped: list[str] = field(default_factory=list)
    drawn_from: list[tuple[str, int]] = field(default_factory=list)  # generated sets: (concept, seed) per image

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def shared_data() -> Path:
    """The shared data folder: $LINE_SHARED_DATA, else ../shared/data beside the repository."""
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return Path(os.environ.get("LINE_SHARED_DATA", default)).expanduser()


def natural_images() -> str:
    """The control spec of natural photos with classes that `control = "auto"` gives a photo
    generator: the ImageNet samples in the shared data folder."""
    folder = shared_data() / NATURAL_SAMPLES
    if not folder.is_dir():
        raise LineError(
            f'control = "auto" with a photo generator needs natural photos with classes, and {str(folder)!r} '
            "does not exist.",
            'Set control = "dir:PATH" (ImageNet val as PATH/<class>/*.JPEG, or a folder of your own photos, one '
            'sub-folder per class), or LINE_SHARED_DATA to a folder holding imagenet-samples/.',
        )
    return f"dir:{folder}"


def generated_image_key(generator_id: str, prompt: str, seed: int) -> str:
    return content_key("image", generator_id, prompt, seed)


def load_control_set(spec: str, cache: DiskCache) -> ControlSet:
    kind, _, arg = spec.partition(":")
    if kind == "procedural":
        return _procedural(spec, arg, cache)
    if kind == "dir":
        return _directory(spec, Path(arg).expanduser())
    raise LineError(
        f"unknown control set {spec!r}.",
        "Use auto, procedural:N (e.g. procedural:300) or dir:PATH (a folder of images).",
    )


def _procedural(spec: str, arg: str, cache: DiskCache) -> ControlSet:
    from tools.generators.procedural import ProceduralGenerator

    low, high = 2 * IMAGES_PER_PROCEDURAL_CLASS, MAX_PROCEDURAL_IMAGES
    if not (arg.isascii() and arg.isdigit() and len(arg) <= 6 and low <= int(arg) <= high):
        raise LineError(
            f"bad control set {spec!r}: N must be a whole number from {low} to {high}.",
            "Example: procedural:300; for more images use dir:PATH with a folder of photos.",
        )
    generator = ProceduralGenerator()
    concepts = generator.random_concepts(int(arg) // IMAGES_PER_PROCEDURAL_CLASS, seed=0)
    pairs = [(concept, CONTROL_SEED_OFFSET + seed) for concept in concepts for seed in range(IMAGES_PER_PROCEDURAL_CLASS)]
    keys = [generated_image_key(generator.id, concept, seed) for concept, seed in pairs]

    def load(index: int) -> Image.Image:
        image = cache.load_image(keys[index])
        if image is None:
            concept, seed = pairs[index]
            image = generator.render([concept], [seed])[0]
            cache.save_image(keys[index], image)
        return image

    return ControlSet(spec, keys, [concept for concept, _ in pairs], load, drawn_from=pairs)


def _directory(spec: str, folder: Path) -> ControlSet:
    if not folder.is_dir():
        raise LineError(f"control folder {str(folder)!r} does not exist.", "Pass dir:PATH with a folder of images.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    keys, labels, paths, skipped = [], [], [], []
    names = _id_names(folder)
    for path in files:
        problem = _unreadable(path)
        if problem:
            skipped.append(f"{path} ({problem})")
            continue
        data = path.read_bytes()
        keys.append(content_key("file", bytes_key(data)))
        label = _class_of(path, folder)
        labels.append(names.get(label, label))
        paths.append(path)
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s: %s", len(skipped), folder, "; ".join(skipped))
    if not keys:
        raise LineError(f"control folder {str(folder)!r} holds no readable images.", "Add JPEG or PNG files.")
    distinct = len(set(keys))
    if distinct < MIN_CONTROL_IMAGES:  # a unit's spread on them is ~0, and MAD divides by it
        raise LineError(f"control folder {str(folder)!r} holds {distinct} different readable image(s) "
                        f"({len(keys)} files); scores need at least {MIN_CONTROL_IMAGES} (MAD divides by their spread).",
                        f"Add at least {MIN_CONTROL_IMAGES} different photos (ImageNet val has 50 a class), "
                        "or use control = procedural:300.")

    def load(index: int) -> Image.Image:
        with Image.open(paths[index]) as image:
            return image.convert("RGB")

    return ControlSet(spec, keys, labels, load, skipped)


def _unreadable(path: Path) -> str | None:
    """Why the image file at `path` is no control image (None when it is one): it does not
    decode, or it is too large to decode (`MAX_CONTROL_PIXELS`, read from its header)."""
    try:
        with warnings.catch_warnings():  # PIL's warning about large images: ours names the file instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_CONTROL_PIXELS:
                    return f"{width}x{height} pixels, over {MAX_CONTROL_PIXELS // 1_000_000} megapixels"
                image.verify()
    except Image.DecompressionBombError:
        return f"over {MAX_CONTROL_PIXELS // 1_000_000} megapixels"
    except Exception as error:
        return error.__class__.__name__
    return None


_ID_CLASS = re.compile(r"^[A-Za-z]?\d+_(.+)$")


def _id_names(folder: Path) -> dict[str, str]:
    """Class ids to names from a mapping file at the top of `folder` (`n01440764 tench, Tinca
    tinca` -> {"n01440764": "tench"}); {} without one."""
    for name in ID_MAPPING_FILES:
        path = folder / name
        if path.is_file():
            pairs = (line.split(maxsplit=1) for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
            return {p[0]: p[1].split(",")[0].strip() for p in pairs if len(p) == 2 and p[1].split(",")[0].strip()}
    return {}


def _class_of(path: Path, root: Path) -> str:
    if path.parent != root:
        return path.parent.name
    match = _ID_CLASS.match(path.stem)
    return (match.group(1) if match else path.stem).replace("_", " ")
