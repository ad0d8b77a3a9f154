"""Text-to-image with a diffusers pipeline (LINE's generator; SD-Turbo by default).

Prompts follow LINE's template, read from `prompts/line_image.txt` with the angle and
lighting phrases of `prompts/angles.txt` and `prompts/lightings.txt`; the phrases are
drawn from the seed, so a (concept, seed) pair always gives the same prompt and, at the
same seed, the same image. The template's `{concept}` comes with its article where it
takes one: "a cat", "an owl", but "octagons" (plural) and "sand" (a mass noun, listed in
`prompts/mass_nouns.txt`); a concept that has its own determiner ("the sky", "two dogs")
keeps it.

The pipeline runs on `device` ("auto": CUDA when torch sees a GPU, else the CPU) in `dtype`
("auto": float16 on CUDA, float32 on a CPU), in batches of `batch_size` images ("auto":
as many as half the free memory of the device holds, at most 16; on CUDA a batch that runs
out of memory is halved and tried again). It loads on the first `render`, never earlier,
so building a generator is cheap and needs neither the weights nor the network. Its `id`
names the weights by a digest of their files (a folder, or the hub cache's revision), so
replacing the weights in a folder invalidates the cached images.

Counterfactuals (`ablate`) are text-only: the concept's words are removed from the prompt
and the result is rendered from scratch at the same seed, so the same initial noise. Edits
that keep the rest of the picture pixel-for-pixel (img2img, inpainting) are future work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import string
import warnings
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from tools import devices
from tools.errors import LineError
from tools.fingerprint import pipeline_fingerprint
from tools.generators.base import Atom, Interpretation
from tools.text import singular

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sd-turbo"
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "prompts"
TEMPLATE_FILE = "line_image.txt"
ANGLES_FILE = "angles.txt"
LIGHTINGS_FILE = "lightings.txt"
MASS_NOUNS_FILE = "mass_nouns.txt"
FIELDS = ("concept", "angle", "lighting")
EMPTY_SUBJECT = "scene"
SWEEP_CONCEPTS = Path(__file__).resolve().parent / "sweep_concepts.txt"

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_ARTICLES = {"a", "an", "the"}
# a concept that starts with one of these has its own determiner: no article is added
_DETERMINERS = _ARTICLES | {
    "some", "any", "many", "several", "few", "much", "no", "this", "that", "these", "those", "my", "your", "his",
    "her", "its", "our", "their", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "each", "every", "both", "all"}
# the head noun of "dog on grass" is the last word before the first of these
_PREPOSITIONS = {
    "on", "in", "with", "of", "under", "over", "at", "by", "and", "or", "near", "behind", "beside", "against",
    "from", "inside", "through", "without", "above", "below", "between", "among", "around", "across", "along",
    "into", "onto", "for", "like", "next", "beneath", "amid", "made", "covered", "full"}
# bytes a pipeline batch takes per image and megapixel in float32 (SD-sized models, measured
# with room to spare: a 512 px image of SD-Turbo peaks near 1.5 GiB); half in float16
BYTES_PER_MEGAPIXEL = 6 << 30
_TRUE = {"1", "true", "yes", "on"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def concept_words(text: str) -> list[str]:
    """The words of `text`, in order (hyphenated and apostrophe words stay whole)."""
    return _WORD.findall(text)


def hub_offline() -> bool:
    """True when the environment forbids the network (read now, not at import time)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return False


def _tidy(text: str) -> str:
    """Collapse the spaces and commas left behind by removed words."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",(\s*,)+", ",", text)
    text = re.sub(r",(?=\S)", ", ", text)
    return text.strip(" ,")


def _remove_words(text: str, words: list[str]) -> str:
    """`text` without `words` (whole words, any case): first as one phrase, then one by one.

    An article right before a removed word goes with it ("a cat on a mat" - "mat" = "a cat on").
    """
    phrases = [" ".join(words)] if len(words) > 1 else []
    phrases += sorted({w.lower() for w in words}, key=len, reverse=True)
    for phrase in phrases:
        body = r"\s+".join(re.escape(w) for w in phrase.split(" "))
        pattern = rf"(?<![\w'-])(?:(?:a|an|the)\s+)?{body}(?![\w'-])"
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    return _tidy(text)


@lru_cache(maxsize=1)
def _inflect() -> Any:
    import inflect

    return inflect.engine()


def noun_phrase(subject: str, mass_nouns: frozenset[str] = frozenset()) -> str:
    """`subject` with the article it takes: "a cat", "an owl", "octagons", "sand", "the sky"."""
    words = subject.split()
    if not words or words[0].lower() in _DETERMINERS or words[0].isdigit():
        return subject
    head_words = []
    for word in words:
        if word.lower() in _PREPOSITIONS and head_words:
            break
        head_words.append(word)
    head = head_words[-1].lower().strip(".,;:!?'\u2019")
    if head in mass_nouns or _plural(head):
        return subject
    return _inflect().a(subject)


def _plural(word: str) -> bool:
    """"octagons", "mice", "sheep"; not "glass" or "bus" (inflect alone takes those for plurals)."""
    if not word.isalpha():
        return False
    if _inflect().singular_noun(word) is False:
        return False
    return not word.endswith("s") or singular(word) != word


def _strip_article(subject: str) -> str:
    words = subject.split(" ")
    return " ".join(words[1:]) if len(words) > 1 and words[0].lower() in _ARTICLES else subject


def _read_lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class DiffusersGenerator:
    """LINE's image generator: a diffusers text-to-image pipeline, SD-Turbo by default.

    `model` is a hub id (looked up in the local Hugging Face cache first) or a local folder
    holding a saved pipeline (`model_index.json`). `device`, `dtype` and `batch_size` take
    "auto" (see the module docstring). Each image is seeded by its own CPU
    `torch.Generator`, so it depends only on its (prompt, seed), not on the batch it was
    rendered in, and the initial noise is the same on every device.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        steps: int = 1,
        guidance_scale: float = 0.0,
        size: int = 512,
        batch_size: int | str = devices.AUTO,
        device: str = devices.AUTO,
        dtype: str = devices.AUTO,
        template_dir: Path | None = None,
    ):
        if steps < 1:
            raise LineError(f"Diffusion steps must be at least 1 (got {steps}).", "Use steps=1 for SD-Turbo.")
        if size < 8 or size % 8:
            raise LineError(f"Image size must be a positive multiple of 8 (got {size}).", "Use e.g. size=512.")
        if batch_size != devices.AUTO and (not isinstance(batch_size, int) or batch_size < 1):
            raise LineError(f"generator.batch_size must be a whole number from 1, or \"auto\" (got {batch_size!r}).",
                            'Use batch_size = "auto" or e.g. 4.')
        if dtype != devices.AUTO and dtype not in devices.DTYPES:
            raise LineError(f"unknown generator.dtype {dtype!r}.", f"Use auto, {', '.join(devices.DTYPES)}.")
        self.model = model
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.size = int(size)
        self.batch_size = batch_size
        self.device_setting, self.dtype_setting = device, dtype
        self.template_dir = Path(template_dir) if template_dir is not None else TEMPLATE_DIR
        (self.template, self.angles, self.lightings, self.mass_nouns,
         self.template_version) = self._load_template()
        self._ablation_pattern = self._template_pattern()
        self._pipe: Any = None
        self._batch: int | None = None  # the batch size in use ("auto" resolved, halved after running out of memory)

    # ------------------------------------------------------------------ template

    def _load_template(self) -> tuple[str, list[str], list[str], frozenset[str], str]:
        paths = [self.template_dir / name for name in (TEMPLATE_FILE, ANGLES_FILE, LIGHTINGS_FILE)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise LineError(
                f"Prompt file(s) not found: {', '.join(missing)}.",
                f"Restore them or pass template_dir= a folder with {TEMPLATE_FILE}, {ANGLES_FILE} and {LIGHTINGS_FILE}.",
            )
        mass_file = self.template_dir / MASS_NOUNS_FILE  # optional
        if mass_file.is_file():
            paths.append(mass_file)
        mass_nouns = frozenset(w.lower() for w in _read_lines(mass_file)) if mass_file.is_file() else frozenset()
        template = paths[0].read_text(encoding="utf-8").strip()
        angles, lightings = _read_lines(paths[1]), _read_lines(paths[2])
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as err:
            raise LineError(f"Prompt template {paths[0]} is malformed ({err}).", "Use {concept}, {angle}, {lighting}.") from err
        if "concept" not in fields or not fields <= set(FIELDS):
            raise LineError(
                f"Prompt template {paths[0]} has fields {sorted(fields)}.",
                "It must contain {concept} and may contain only {concept}, {angle} and {lighting}.",
            )
        for path, phrases in ((paths[1], angles), (paths[2], lightings)):
            if not phrases:
                raise LineError(f"Prompt file {path} has no phrases.", "Write one phrase per line.")
        digest = hashlib.sha256()
        for path in paths:
            digest.update(path.read_bytes())
            digest.update(b"\0")
        return template, angles, lightings, mass_nouns, digest.hexdigest()[:8]

    def _template_pattern(self) -> re.Pattern[str]:
        """A regex matching exactly the prompts `prompt()` can produce, capturing each field."""
        choices = {"angle": self.angles, "lighting": self.lightings}
        parts, seen = [], set()
        for literal, name, _, _ in string.Formatter().parse(self.template):
            parts.append(re.escape(literal))
            if name is None:
                continue
            if name in seen:  # a field used twice must repeat the same text
                parts.append(f"(?P={name})")
                continue
            seen.add(name)
            if name == "concept":
                parts.append(r"(?P<concept>.*)")
            else:
                alternatives = "|".join(re.escape(p) for p in sorted(choices[name], key=len, reverse=True))
                parts.append(f"(?P<{name}>{alternatives})")
        return re.compile("^" + "".join(parts) + "$", re.DOTALL)

    # ------------------------------------------------------------------ protocol

    @cached_property
    def device(self) -> str:
        """The device the pipeline runs on ("auto" resolved)."""
        return devices.resolve_device(self.device_setting, "generator.device")

    @cached_property
    def dtype(self) -> str:
        """The pipeline's precision ("auto" resolved): float32, float16 or bfloat16."""
        return devices.resolve_dtype(self.dtype_setting, self.device, "generator.dtype")

    @cached_property
    def id(self) -> str:
        """Every setting that changes the pixels: the weights (by a digest of their files,
        taken once per generator), steps, guidance, size, precision, the device's kind (CPU
        and CUDA draw the same noise, not the same floats) and the prompt files."""
        weights = pipeline_fingerprint(self.model)
        return (
            f"diffusers:{self.model}{'@' + weights if weights else ''}|steps={self.steps}"
            f"|guidance={self.guidance_scale:g}|size={self.size}|{devices.DTYPES[self.dtype]}"
            f"|{self.device.split(':')[0]}|template={self.template_version}"
        )

    def interpret(self, concept: str) -> Interpretation:
        """Open vocabulary: every word is understood; "" canonical only for an empty concept."""
        words = concept_words(concept)
        return Interpretation(concept=concept, understood=words, ignored=[], canonical=None if words else "")

    def prompt(self, concept: str, seed: int) -> str:
        """LINE's photo prompt for `concept` (with the article it takes); angle and lighting
        are drawn from `seed`."""
        subject = " ".join(concept.split()) or EMPTY_SUBJECT
        rng = random.Random(int(seed))
        angle = rng.choice(self.angles)
        lighting = rng.choice(self.lightings)
        return self.template.format(concept=noun_phrase(subject, self.mass_nouns), angle=angle, lighting=lighting)

    def ablate(self, prompt: str, concept: str) -> str:
        """`prompt` with the words of `concept` removed, to be rendered at the same seed.

        For a prompt made by `prompt()` only the subject is edited (the template, angle and
        lighting stay as they are); a subject left empty becomes "scene". Any other prompt
        loses the concept's words wherever they appear (articles excepted).
        """
        words = concept_words(concept)
        if not words:
            return prompt
        match = self._ablation_pattern.match(prompt)
        if match is None:
            content = [w for w in words if w.lower() not in _ARTICLES] or words
            return _remove_words(prompt, content) or EMPTY_SUBJECT
        fields = match.groupdict()
        subject = _remove_words(_strip_article(fields["concept"]), words)
        if not concept_words(subject):
            subject = EMPTY_SUBJECT
        fields["concept"] = noun_phrase(subject, self.mass_nouns)
        return self.template.format(**fields)

    def drawn(self, concept: str, seed: int) -> str:
        """A diffusion model's choices have no names: the concept itself."""
        return concept

    def atoms(self) -> list[Atom]:
        """Common concepts (`sweep_concepts.txt`): an open vocabulary has no attributes to sweep."""
        return [Atom("concepts", concept, concept) for concept in _read_lines(SWEEP_CONCEPTS)]

    def vocabulary(self) -> dict[str, list[str]]:
        return {}

    def render(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One `size`x`size` RGB image per (prompt, seed), in pipeline batches."""
        return [image for batch in self.batches(prompts, seeds) for image in batch]

    def batches(self, prompts: list[str], seeds: list[int]) -> Iterator[list[Image.Image]]:
        """The images of `render`, one pipeline batch of `batch_size` at a time. On CUDA a batch
        that runs out of memory is halved and tried again (and the smaller size kept)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"render() got {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return
        import torch

        pipe = self._pipeline()
        start = 0
        while start < len(prompts):
            size = self.pipeline_batch_size()
            batch_prompts, batch_seeds = list(prompts[start : start + size]), seeds[start : start + size]
            try:
                with _quiet_libraries():
                    out = pipe(
                        prompt=batch_prompts,
                        generator=[torch.Generator("cpu").manual_seed(int(s)) for s in batch_seeds],
                        height=self.size,
                        width=self.size,
                        num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale,
                        output_type="pil",
                    )
            except torch.OutOfMemoryError as error:
                if size == 1:
                    raise LineError(f"one {self.size} px image does not fit in the memory of {self.device} ({error}).",
                                    'Lower generator.size, use generator.dtype = "float16", or '
                                    'generator.device = "cpu".') from error
                self._batch = size // 2
                log.info("pipeline batch of %d ran out of memory on %s: trying %d", size, self.device, self._batch)
                torch.cuda.empty_cache()
                continue
            start += len(batch_prompts)
            yield [image.convert("RGB") for image in out.images]

    def pipeline_batch_size(self) -> int:
        """Images per pipeline batch: `batch_size`, or for "auto" as many as half the free
        memory of the device holds after loading (1 to 16). Loads the pipeline."""
        if self._batch is None:
            self._pipeline()
            if self.batch_size != devices.AUTO:
                self._batch = int(self.batch_size)
            else:
                per_image = BYTES_PER_MEGAPIXEL * self.size**2 / 1e6 * (1 if self.dtype == "float32" else 0.5)
                self._batch = devices.auto_batch_size(devices.free_memory(self.device), per_image)
                log.info("generator batch size %d (auto, %s, %d px, %s)", self._batch, self.device, self.size, self.dtype)
        return self._batch

    # ------------------------------------------------------------------ loading

    def _pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def _local_folder(self) -> Path | None:
        path = Path(self.model).expanduser()
        if path.is_dir():
            return path
        if not _HUB_ID.match(self.model):
            raise LineError(
                f"Model folder {path} does not exist.",
                "Pass a folder holding a saved diffusers pipeline (with model_index.json) or a hub id such as "
                f"{DEFAULT_MODEL}.",
            )
        return None

    def _load(self) -> Any:
        device, dtype = self.device, devices.torch_dtype(self.dtype)
        folder = self._local_folder()
        with _quiet_libraries():
            from diffusers import AutoPipelineForText2Image

            if folder is not None:
                try:
                    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
                except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as err:
                    raise LineError(
                        f"Folder {folder} is not a diffusers text-to-image pipeline ({type(err).__name__}: {err}).",
                        "Pass a folder made by `hf download <hub id> --local-dir <folder>` or "
                        "`pipeline.save_pretrained(<folder>)`, with model_index.json at its top.",
                    ) from err
            else:
                pipe = self._load_hub(AutoPipelineForText2Image, dtype)
            if getattr(pipe, "safety_checker", None) is not None:
                pipe.safety_checker = None  # it blanks images it flags; LINE needs every image
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            return pipe.to(device)

    def _load_hub(self, auto_pipeline: Any, dtype: Any) -> Any:
        """Load a hub id: from the local cache first, then (when allowed) from the network."""
        errors = (OSError, ValueError)  # hub errors (LocalEntryNotFoundError, HfHubHTTPError...) are OSErrors
        advice = (
            f"Download it on a machine with network: `hf download {self.model} "
            f"--local-dir ~/models/{self.model.split('/')[-1]}`, copy the folder here, then pass "
            f"--generator diffusers:~/models/{self.model.split('/')[-1]}."
        )
        try:
            return auto_pipeline.from_pretrained(self.model, dtype=dtype, local_files_only=True)
        except errors as err:
            cached_error: Exception = err
        if hub_offline():
            raise LineError(
                f"Model {self.model} is not in the local Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE) ({type(cached_error).__name__}: {cached_error}).",
                advice,
            ) from cached_error
        try:
            return auto_pipeline.from_pretrained(self.model, dtype=dtype, local_files_only=False)
        except errors as err:
            raise LineError(
                f"Could not load model {self.model}: not in the local Hugging Face cache, and the hub "
                f"failed ({type(err).__name__}: {err}).",
                advice,
            ) from err


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """diffusers', transformers' and the hub's warnings, notices and loading bars (torchvision
    missing, accelerate missing, generators on the CPU) held back while the pipeline loads and
    runs; with `line -v` (logging at INFO) they are shown. The settings are restored after."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    hub_saved = (hub_logging.get_verbosity(), hub_utils.are_progress_bars_disabled())
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    hub_logging.set_verbosity_error()
    hub_utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
        hub_logging.set_verbosity(hub_saved[0])
        if not hub_saved[1]:
            hub_utils.enable_progress_bars()
