"""The scoring engine shared by the CLI, the agent's graph, its tools and the evals.

One `Engine` serves one (target model, layer, generator, control set). It renders concept
images through the image cache, computes activations of ALL units of the layer through the
activation cache, and scores them against the control set. Every concept it scores enters
the layer's concept bank, so later units can start from concepts already paid for.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np
from PIL import Image

from tools.bank import ConceptBank, FileBank
from tools.cache import DiskCache, content_key, is_cache_key
from tools.concepts import concept_problem
from tools.control import ControlSet, generated_image_key
from tools.criterion import Criterion
from tools.errors import LineError, check_unit_index, no_units
from tools.generators.base import ImageGenerator, Interpretation
from tools.scoring import ControlSummary, Scores, score_units, summarise, unit_scores

if TYPE_CHECKING:
    from tools.models import TargetModel

log = logging.getLogger(__name__)

ControlMode = Literal["all", "class"]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ImageRef:
    """A cached image: its content key, and how it was made."""

    key: str
    prompt: str
    seed: int
    path: str


@dataclass
class Evidence:
    """A concept's images and the layer's activations on them (images x units)."""

    concept: str
    interpretation: Interpretation
    images: list[ImageRef]
    activations: np.ndarray
    table: dict[str, np.ndarray] = field(repr=False)
    rendered: int = 0

    def scores(self, unit: int) -> Scores:
        return unit_scores(self.table, unit)

    def top_units(self, k: int, by: str = "auc") -> list[int]:
        return [int(i) for i in np.argsort(-self.table[by], kind="stable")[:k]]


class Engine:
    def __init__(
        self,
        model_name: str,
        load_model: Callable[[], TargetModel],
        layer: str,
        generator: ImageGenerator,
        control: ControlSet,
        cache: DiskCache,
        images_per_concept: int = 5,
        control_mode: ControlMode = "all",
        batch_size: int | None = None,
        progress: Progress | None = None,
        fingerprint: str = "",
        banks: Callable[[str], ConceptBank] | None = None,
    ):
        self.model_name, self.layer, self.generator = model_name, layer, generator
        # cache keys name the model by its spec and a digest of what the spec loads (tools.fingerprint)
        self.model_id = f"{model_name}@{fingerprint}" if fingerprint else model_name
        self._load_model, self._model = load_model, None
        self.control, self.cache = control, cache
        self.images_per_concept = images_per_concept
        self.control_mode = control_mode
        self.batch_size = batch_size  # images per forward; None: the model's (TargetModel.forward_batch)
        self.progress = progress
        self._render_lock = threading.Lock()
        self._bank_lock = threading.Lock()
        self._control_acts: np.ndarray | None = None
        self._control_summary: ControlSummary | None = None  # scoring's view of the control set, every unit
        self._bank_acts: dict[str, np.ndarray] = {}
        self._sweep: tuple[tuple[str, ...], list[Evidence]] | None = None
        self._sweep_lock = threading.Lock()
        self._banked: set[str] | None = None
        self._bank_warned = False
        self._bank_parsed: dict[tuple, list[ImageRef] | None] = {}  # a bank entry, checked once (None: skipped)
        # the layer's concept bank: a JSONL file in the cache by default, or a store's table (agent.runs.store)
        bank_key = content_key(self.model_id, layer, generator.id)
        self.concept_bank = banks(bank_key) if banks else FileBank(cache.root / "banks" / f"{bank_key}.jsonl")

    @property
    def model(self) -> TargetModel:
        """The target model, loaded on first use: a query whose activations are all cached
        never loads it (nor imports torch)."""
        if self._model is None:
            model = self._load_model()
            model.layer(self.layer)  # validates the name, listing near matches
            self._model = model
        return self._model

    @property
    def forward_batch(self) -> int:
        return self.batch_size or self.model.forward_batch

    # --- units -------------------------------------------------------------------------
    def check_unit(self, unit: int) -> int:
        return check_unit_index(unit, self.units, self.layer)

    def nonfinite_units(self, units: Sequence[int], acts: np.ndarray | None = None) -> list[int]:
        """Those of `units` whose activations (on the control set, and on `acts` when given)
        hold NaN or inf: nothing about them can be scored."""
        rows = [self.control_activations()] + ([np.asarray(acts)] if acts is not None and len(acts) else [])
        return [int(u) for u in units if not all(np.isfinite(r[:, u]).all() for r in rows)]

    def check_finite(self, units: Sequence[int], acts: np.ndarray | None = None) -> None:
        """A LineError naming the units of `units` whose activations are not finite."""
        bad = self.nonfinite_units(units, acts)
        if bad:
            control = self.control_activations()
            share = f"{int((~np.isfinite(control[:, bad[0]])).sum())} of {len(control)} control images"
            raise LineError(f"unit{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:20]))}{' ...' if len(bad) > 20 else ''} "
                            f"of layer {self.layer} give{'' if len(bad) > 1 else 's'} NaN or inf activations "
                            f"(unit {bad[0]}: on {share}); they cannot be scored or labelled.",
                            "Check the model (a division by zero, an overflow in float16: try --device cpu) or pick other units.")

    @cached_property
    def units(self) -> int:
        """Units of the layer, remembered in the cache (finding out costs a first forward).
        Only a layer that once existed has a remembered count."""
        key = content_key("units", self.model_id, self.layer)
        known = self.cache.load_array(key)
        if known is not None and len(known) == 1:
            return int(known[0])
        from tools.activations import unit_count

        units = unit_count(self.model, self.layer)
        self.cache.save_array(key, np.array([units]))
        return units

    # --- images ------------------------------------------------------------------------
    def seeds(self, n: int | None = None, start: int = 0) -> list[int]:
        return list(range(start, start + (n or self.images_per_concept)))

    def concept_images(self, concept: str, seeds: Sequence[int] | None = None) -> tuple[list[ImageRef], int]:
        """The concept's images (one per seed) and how many had to be rendered."""
        seeds = list(seeds) if seeds is not None else self.seeds()
        return self.render([self.generator.prompt(concept, s) for s in seeds], seeds)

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[ImageRef], int]:
        """Images for (prompt, seed) pairs, rendering only those not cached yet; returns
        the images and how many were rendered."""
        refs, missing = self._render(prompts, seeds)
        return refs, len(missing)

    def _render(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[ImageRef], list[int]]:
        """The images, and the positions of those that had to be rendered: all of them in
        one pass of the generator, which batches them across concepts (a pipeline batch of
        `batch_size`). Each batch is cached as it comes, and reported to `progress` as
        ("images", done, total), from ("images", 0, total) on."""
        keys = [generated_image_key(self.generator.id, p, s) for p, s in zip(prompts, seeds)]
        missing = [i for i, key in enumerate(keys) if not self.cache.has_image(key)]
        if missing:
            with self._render_lock:
                missing = [i for i in missing if not self.cache.has_image(keys[i])]  # another thread's meanwhile
                done = 0
                if self.progress and missing:  # shown while the generator loads and draws its first batch
                    self.progress("images", 0, len(missing))
                for images in self.generator.batches([prompts[i] for i in missing], [seeds[i] for i in missing]):
                    for i, image in zip(missing[done:], images):
                        self.cache.save_image(keys[i], image)
                    done += len(images)
                    self.cache.count("images_generated", len(images))
                    if self.progress:
                        self.progress("images", done, len(missing))
        refs = [ImageRef(k, p, s, str(self.cache.image_path(k))) for k, p, s in zip(keys, prompts, seeds)]
        return refs, missing

    def load_image(self, ref: ImageRef) -> Image.Image:
        image = self.cache.load_image(ref.key)
        if image is None:  # removed or corrupt: render it again
            image = self.generator.render([ref.prompt], [ref.seed])[0]
            self.cache.save_image(ref.key, image)
        return image

    # --- activations -------------------------------------------------------------------
    def activations(self, keys: Sequence[str], load: Callable[[int], Image.Image]) -> np.ndarray:
        """images x units for the images with these cache keys; `load(i)` opens image i."""
        rows: list[np.ndarray | None] = [
            self.cache.load_array(self._act_key(key)) for key in keys
        ]
        rows = [r if r is not None and r.shape == (self.units,) else None for r in rows]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:  # all cached: the model is never loaded
            from tools.activations import layer_activations

            batch = self.forward_batch
            for start in range(0, len(missing), batch):
                chunk = missing[start : start + batch]
                acts = layer_activations(self.model, self.layer, [load(i) for i in chunk], batch)
                for i, vector in zip(chunk, acts):
                    self.cache.save_array(self._act_key(keys[i]), vector)
                    rows[i] = vector
                if self.progress:
                    self.progress("activations", start + len(chunk), len(missing))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.units), np.float32)

    def image_activations(self, refs: Sequence[ImageRef]) -> np.ndarray:
        return self.activations([r.key for r in refs], lambda i: self.load_image(refs[i]))

    def control_activations(self) -> np.ndarray:
        if self._control_acts is None:
            self._control_acts = self.activations(self.control.keys, self.control.load)
        return self._control_acts

    def activation_maps(self, keys: Sequence[str], load: Callable[[int], Image.Image], unit: int) -> list[np.ndarray] | None:
        """One unit's spatial map (H x W, over the model's input crop) on each image with
        these cache keys, cached like activations; None when the layer has no spatial map
        (its output is N x T x D or N x D: nothing to show where the unit fires)."""
        flat = content_key("no-map", self.model_id, self.layer)
        if self.cache.load_array(flat) is not None:
            return None
        map_keys = [content_key("map", self.model_id, self.layer, str(unit), key) for key in keys]
        maps: list[np.ndarray | None] = [self.cache.load_array(k, ndim=2) for k in map_keys]
        missing = [i for i, m in enumerate(maps) if m is None]
        if missing:
            from tools.activations import unit_maps

            computed = unit_maps(self.model, self.layer, [load(i) for i in missing], unit, self.forward_batch)
            if computed is None:
                self.cache.save_array(flat, np.zeros(1))
                return None
            for i, one in zip(missing, computed):
                self.cache.save_array(map_keys[i], one.astype(np.float32))
                maps[i] = one
        return [np.asarray(m, dtype=np.float32) for m in maps]

    def _act_key(self, image_key: str) -> str:
        return content_key("activation", self.model_id, self.layer, image_key)

    # --- scoring -----------------------------------------------------------------------
    def evaluate(self, concept: str, seeds: Sequence[int] | None = None) -> Evidence:
        """Render `concept`, compute the layer's activations and score every unit."""
        return self.evaluate_many([concept], seeds)[0]

    def evaluate_many(self, concepts: Sequence[str], seeds: Sequence[int] | None = None) -> list[Evidence]:
        """`evaluate` for several concepts at once: their images are rendered together (the
        generator batches them) and go through the model in shared batches. Concepts
        scored at the loop's own seeds enter the layer's concept bank."""
        seeds = list(seeds) if seeds is not None else self.seeds()
        prompts = [self.generator.prompt(c, s) for c in concepts for s in seeds]
        refs, missing = self._render(prompts, seeds * len(concepts))
        acts = self.image_activations(refs)
        result = []
        for i, concept in enumerate(concepts):
            part = slice(i * len(seeds), (i + 1) * len(seeds))
            rendered = sum(part.start <= m < part.stop for m in missing)
            if seeds == self.seeds():
                self._bank_add(concept, refs[part])
            result.append(Evidence(concept, self.generator.interpret(concept), refs[part], acts[part],
                                   self.score_table(acts[part]), rendered))
        return result

    def score_table(self, acts: np.ndarray, units: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Scores of `units` (all by default), in that order, for images x units activations."""
        chosen = np.arange(self.units) if units is None else np.asarray(units)
        acts, control = acts[:, chosen], self.control_activations()[:, chosen]
        if self.control_mode == "all":
            if self._control_summary is None:
                self._control_summary = summarise(self.control_activations())
            return score_units(acts, control, self._control_summary.columns(chosen))
        # LINE's mode: each unit against the control class it responds to least.
        classes, means = self.class_means()
        lowest = means[:, chosen].argmin(axis=0)
        labels = np.array(self.control.labels)
        table: dict[str, np.ndarray] = {}
        for c in np.unique(lowest):
            columns = np.flatnonzero(lowest == c)
            part = score_units(acts[:, columns], control[labels == classes[c]][:, columns])
            for name, values in part.items():
                table.setdefault(name, np.zeros(len(chosen)))[columns] = values
        return table

    def class_means(self) -> tuple[list[str], np.ndarray]:
        """Control classes and their mean activation per unit (classes x units)."""
        control = self.control_activations()
        labels = np.array(self.control.labels)
        classes = self.control.classes
        return classes, np.stack([control[labels == c].mean(axis=0) for c in classes])

    # --- concept bank ------------------------------------------------------------------
    def bank(self) -> dict[str, list[ImageRef]]:
        """Every concept scored so far on this (model, layer, generator), across runs and
        processes (tools.bank). A concept that fails the concept check (tools.concepts), or
        an entry that does not parse, is skipped: the cache folder is not trusted."""
        bank, skipped = {}, []
        for concept, images in self.concept_bank.entries():
            refs = self._bank_entry(concept, images)
            if refs is None:
                skipped.append(concept)
            elif refs:
                bank[concept] = refs
        if skipped and not self._bank_warned:  # once per engine: the bank is read for every unit
            self._bank_warned = True
            log.warning("concept bank %s: %d entr%s skipped (image keys or seeds that the cache does not write, "
                        "e.g. for %r).", getattr(self.concept_bank, "path", "table"), len(skipped),
                        "y" if len(skipped) == 1 else "ies", str(skipped[0])[:60])
        return bank

    def _bank_entry(self, concept, images) -> list[ImageRef] | None:
        """A bank entry's images as checked refs; [] for a concept the check refuses; None for
        an entry that does not parse. Memoised per entry: the bank is read for every unit,
        and a network's layers hold a few thousand entries."""
        try:
            key = (concept, json.dumps(images, sort_keys=True))
        except (TypeError, ValueError):
            return None
        if key not in self._bank_parsed:
            try:
                self._bank_parsed[key] = ([self._banked_ref(**r) for r in images]
                                          if concept_problem(concept, self.generator) is None else [])
            except (KeyError, TypeError, AttributeError, ValueError):
                self._bank_parsed[key] = None
        return self._bank_parsed[key]

    def _banked_ref(self, key: str, prompt: str, seed: int, path: str = "") -> ImageRef:
        """A bank entry's image, checked: its key a cache key (the file a key names is inside
        the cache root), its seed a number; the path is the cache's, never the entry's."""
        if not (is_cache_key(key) and isinstance(prompt, str) and isinstance(seed, int) and not isinstance(seed, bool)):
            raise ValueError(f"bad banked image {str(key)[:40]!r}")
        return ImageRef(key, prompt, seed, str(self.cache.image_path(key)))

    def bank_best(self, unit: int, k: int, criterion: Criterion,
                  exclude: Sequence[str] = ()) -> list[tuple[str, Scores]]:
        """The k banked concepts that score best for `unit` by `criterion` (no new images)."""
        excluded = {e.lower() for e in exclude}
        bank = self.bank()  # read once: with the vocabulary sweep in it, a few hundred entries a unit
        scored = self._scored(unit, bank, [c for c in bank if c.lower() not in excluded])
        return criterion.order(scored, lambda item: item[1])[:k]

    def bank_scores(self, unit: int, concepts: Sequence[str] | None = None) -> list[tuple[str, Scores]]:
        """`unit`'s scores for banked concepts (all, or those of `concepts` in the bank)."""
        bank = self.bank()
        return self._scored(unit, bank, bank if concepts is None else concepts)

    def _scored(self, unit: int, bank: dict[str, list[ImageRef]], concepts) -> list[tuple[str, Scores]]:
        chosen = [c for c in concepts if c in bank]
        result = []
        for concept in chosen:
            if concept not in self._bank_acts:
                self._bank_acts[concept] = self.image_activations(bank[concept])
            result.append((concept, unit_scores(self.score_table(self._bank_acts[concept], [unit]), 0)))
        return result

    def sweep(self, concepts: Sequence[str]) -> int:
        """Score `concepts` once for every unit of the layer (the vocabulary sweep): they enter
        the concept bank, and every unit of this engine reads them from memory
        (`sweep_evidence`). Returns the images rendered."""
        return sum(e.rendered for e in self.sweep_evidence(concepts))

    def sweep_evidence(self, concepts: Sequence[str]) -> list[Evidence]:
        """The sweep's evidence for `concepts`, computed once per engine (images from the
        cache, activations in shared batches) and kept in memory: every unit of the layer
        reads its scores from it without opening a cached file."""
        key = tuple(concepts)
        with self._sweep_lock:
            if self._sweep is None or self._sweep[0] != key:
                self._sweep = (key, self.evaluate_many(key) if key else [])
            return self._sweep[1]

    def _bank_add(self, concept: str, refs: list[ImageRef]) -> None:
        with self._bank_lock:
            if self._banked is None:  # what this process knows is banked; the bank itself keeps concepts unique
                self._banked = set(self.bank())
            if concept in self._banked or concept_problem(concept, self.generator) is not None:
                return
            self.concept_bank.add(concept, [r.__dict__ for r in refs])
            self._banked.add(concept)


def forward_together(engines: Sequence[Engine], keys: Sequence[str], load: Callable[[int], Image.Image],
                     batch_size: int | None = None) -> int:
    """Fill the activation caches of `engines` (layers of one loaded model) for the images
    with these cache keys, ONE forward per batch for all their layers; images every engine
    has already are skipped. Returns the images forwarded. Each engine then reads its
    activations from the cache, as if it had computed them itself."""
    if not engines:
        return 0
    model = engines[0].model
    if any(e.model is not model for e in engines[1:]):
        raise ValueError("forward_together needs engines sharing one loaded model (build_engines)")
    missing = [i for i, key in enumerate(keys) if not all(e.cache.array_path(e._act_key(key)).exists() for e in engines)]
    from tools.activations import layers_activations

    progress = engines[0].progress
    batch_size = batch_size or model.forward_batch
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        acts = layers_activations(model, [e.layer for e in engines], [load(i) for i in chunk], batch_size)
        for engine in engines:
            for i, vector in zip(chunk, acts[engine.layer]):
                engine.cache.save_array(engine._act_key(keys[i]), vector)
        if progress:
            progress("activations", start + len(chunk), len(missing))
    return len(missing)


def prepare_layers(engines: Sequence[Engine], concepts: Sequence[str], seeds: Sequence[int] | None = None,
                   images: Sequence[tuple[Sequence[str], Callable[[int], Image.Image]]] = ()) -> dict:
    """What several layers of one model need first, in shared forwards: the control set's
    activations, those of `concepts` at `seeds` (the loop's by default: a network run's
    vocabulary sweep), rendered once, and of other `images` ((cache keys, loader) pairs: the
    verdict's natural photos). Returns the images rendered and forwarded."""
    if not engines:
        return {"images_rendered": 0, "images_forwarded": 0}
    first = engines[0]
    forwarded = forward_together(engines, first.control.keys, first.control.load, first.forward_batch)
    for keys, load in images:
        forwarded += forward_together(engines, list(keys), load, first.forward_batch)
    seeds = list(seeds) if seeds is not None else first.seeds()
    refs, rendered = first.render([first.generator.prompt(c, s) for c in concepts for s in seeds], seeds * len(concepts))
    forwarded += forward_together(engines, [r.key for r in refs], lambda i: first.load_image(refs[i]), first.forward_batch)
    return {"images_rendered": rendered, "images_forwarded": forwarded}


_UNIT_RANGE = re.compile(r"\s*(\d{1,30})\s*(?:-\s*(\d{1,30})\s*)?", re.ASCII)  # too large: out of range


def parse_units(text: str, units: int, layer: str = "") -> list[int]:
    """'all', '17', '0-9' or '1,5,9-12' -> unit indices (each once, in order), each checked
    against the layer's `units` (a LineError for a layer without any)."""
    if units <= 0:
        raise no_units(layer)
    if text.strip().lower() == "all":
        return list(range(units))
    chosen: dict[int, None] = {}
    for part in text.split(","):
        match = _UNIT_RANGE.fullmatch(part)
        if match is None:
            raise LineError(f"bad unit list {text!r}.", "Use a number, a range like 0-9, a list like 1,5,9-12, or all.")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise LineError(f"empty unit range {part.strip()!r} in {text!r}.", f"Write the range low to high: {hi}-{lo}.")
        check_unit_index(hi, units, layer)
        chosen.update(dict.fromkeys(range(lo, hi + 1)))
    return list(chosen)
