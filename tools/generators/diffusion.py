"""Text-to-image with a diffusers pipeline (LINE's generator; SD-Turbo by default).

Prompts follow LINE's template, read from `prompts/line_image.txt` with the angle and
lighting phrases of `prompts/angles.txt` and `prompts/lightings.txt`; the phrases are
drawn from the seed, so a (concept, seed) pair always gives the same prompt and, at the
same seed, the same image.

The pipeline loads on the first `render`, never earlier, so building a generator (and
reading its `id`) is cheap and needs neither the weights nor the network.

Counterfactuals (`ablate`) are text-only: the concept's words are removed from the prompt
and the result is rendered from scratch at the same seed, so the same initial noise. Edits
that keep the rest of the picture pixel-for-pixel (img2img, inpainting) are future work.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import string
from pathlib import Path
from typing import Any

from PIL import Image

from tools.errors import LineError
from tools.generators.base import Atom, Interpretation

DEFAULT_MODEL = "stabilityai/sd-turbo"
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "prompts"
TEMPLATE_FILE = "line_image.txt"
ANGLES_FILE = "angles.txt"
LIGHTINGS_FILE = "lightings.txt"
FIELDS = ("concept", "angle", "lighting")
EMPTY_SUBJECT = "scene"
SWEEP_CONCEPTS = Path(__file__).resolve().parent / "sweep_concepts.txt"

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_ARTICLES = {"a", "an", "the"}
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


def _read_lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class DiffusersGenerator:
    """LINE's image generator: a diffusers text-to-image pipeline, SD-Turbo by default.

    `model` is a hub id (looked up in the local Hugging Face cache first) or a local folder
    holding a saved pipeline (`model_index.json`). Images are float32 on `device`; each is
    seeded by its own `torch.Generator`, so an image depends only on its (prompt, seed),
    not on the batch it was rendered in.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        steps: int = 1,
        guidance_scale: float = 0.0,
        size: int = 512,
        batch_size: int = 4,
        device: str = "cpu",
        template_dir: Path | None = None,
    ):
        if steps < 1:
            raise LineError(f"Diffusion steps must be at least 1 (got {steps}).", "Use steps=1 for SD-Turbo.")
        if size < 8 or size % 8:
            raise LineError(f"Image size must be a positive multiple of 8 (got {size}).", "Use e.g. size=512.")
        if batch_size < 1:
            raise LineError(f"Batch size must be at least 1 (got {batch_size}).", "Use e.g. batch_size=4.")
        self.model = model
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.device = device
        self.template_dir = Path(template_dir) if template_dir is not None else TEMPLATE_DIR
        self.template, self.angles, self.lightings, self.template_version = self._load_template()
        self._ablation_pattern = self._template_pattern()
        self._pipe: Any = None

    # ------------------------------------------------------------------ template

    def _load_template(self) -> tuple[str, list[str], list[str], str]:
        paths = [self.template_dir / name for name in (TEMPLATE_FILE, ANGLES_FILE, LIGHTINGS_FILE)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise LineError(
                f"Prompt file(s) not found: {', '.join(missing)}.",
                f"Restore them or pass template_dir= a folder with {TEMPLATE_FILE}, {ANGLES_FILE} and {LIGHTINGS_FILE}.",
            )
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
        return template, angles, lightings, digest.hexdigest()[:8]

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

    @property
    def id(self) -> str:
        device_type = self.device.split(":")[0]  # cpu and cuda draw the same noise, not the same floats
        return (
            f"diffusers:{self.model}|steps={self.steps}|guidance={self.guidance_scale:g}"
            f"|size={self.size}|fp32|{device_type}|template={self.template_version}"
        )

    def interpret(self, concept: str) -> Interpretation:
        """Open vocabulary: every word is understood; "" canonical only for an empty concept."""
        words = concept_words(concept)
        return Interpretation(concept=concept, understood=words, ignored=[], canonical=None if words else "")

    def prompt(self, concept: str, seed: int) -> str:
        """LINE's photo prompt for `concept`; angle and lighting are drawn from `seed`."""
        subject = " ".join(concept.split())
        words = subject.split(" ")
        if len(words) > 1 and words[0].lower() in _ARTICLES:  # the template has its own article
            subject = " ".join(words[1:])
        rng = random.Random(int(seed))
        angle = rng.choice(self.angles)
        lighting = rng.choice(self.lightings)
        return self.template.format(concept=subject or EMPTY_SUBJECT, angle=angle, lighting=lighting)

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
        subject = _remove_words(fields["concept"], words)
        if not concept_words(subject):
            subject = EMPTY_SUBJECT
        fields["concept"] = subject
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
        """One `size`x`size` RGB image per (prompt, seed), in batches of `batch_size`."""
        if len(prompts) != len(seeds):
            raise ValueError(f"render() got {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        import torch

        pipe = self._pipeline()
        images: list[Image.Image] = []
        for start in range(0, len(prompts), self.batch_size):
            batch_prompts = list(prompts[start : start + self.batch_size])
            batch_seeds = seeds[start : start + self.batch_size]
            # CPU generators: the initial noise is the same on every device.
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in batch_seeds]
            out = pipe(
                prompt=batch_prompts,
                generator=generators,
                height=self.size,
                width=self.size,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                output_type="pil",
            )
            images.extend(image.convert("RGB") for image in out.images)
        return images

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
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise LineError(f"Unknown device {self.device!r}.", "Use cpu, cuda or cuda:N.") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LineError(f"Device {self.device!r} asked for, but torch sees no CUDA GPU.", "Use device='cpu'.")
        from diffusers import AutoPipelineForText2Image

        folder = self._local_folder()
        if folder is not None:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as err:
                raise LineError(
                    f"Folder {folder} is not a diffusers text-to-image pipeline ({type(err).__name__}: {err}).",
                    "Pass a folder made by `huggingface-cli download <hub id> --local-dir <folder>` or "
                    "`pipeline.save_pretrained(<folder>)`, with model_index.json at its top.",
                ) from err
        else:
            pipe = self._load_hub(AutoPipelineForText2Image, torch.float32)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # it blanks images it flags; LINE needs every image
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def _load_hub(self, auto_pipeline: Any, dtype: Any) -> Any:
        """Load a hub id: from the local cache first, then (when allowed) from the network."""
        errors = (OSError, ValueError)  # hub errors (LocalEntryNotFoundError, HfHubHTTPError...) are OSErrors
        advice = (
            f"Download it on a machine with network: `huggingface-cli download {self.model} "
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
