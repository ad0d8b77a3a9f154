"""The concept bank's storage: one entry per concept scored on a (model, layer, generator),
with its images, shared by every run, thread and process that scores that layer.

`ConceptBank` is what the engine needs: `entries()` in the order they were added, and
`add()`, which keeps the first entry of a concept and loses none when several processes
add at once. `FileBank` is the default (a JSONL file under the cache folder); a database
table (agent.runs.store) serves workers on several machines.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Protocol

from tools.errors import CACHE_DIR, os_error


class ConceptBank(Protocol):
    def entries(self) -> list[tuple[str, list[dict]]]:
        """(concept, its images as ImageRef fields), oldest first."""

    def add(self, concept: str, images: list[dict]) -> bool:
        """Bank `concept` unless it is there already; whether it was added."""


class FileBank:
    """One JSON line per concept, appended under an exclusive lock of the file (`flock`), so
    that writers in several processes on one machine add each concept once. Readers take no
    lock: a line cut by a crash (or still being written) is skipped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def entries(self) -> list[tuple[str, list[dict]]]:
        try:
            return _parse(self.path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return []

    def add(self, concept: str, images: list[dict]) -> bool:
        try:
            return self._add(concept, images)
        except OSError as error:  # a full disk, a read-only folder: one line naming the path
            raise os_error(error, CACHE_DIR) from error

    def _add(self, concept: str, images: list[dict]) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            handle.seek(0)
            text = handle.read()
            needle = json.dumps(concept)  # parse only the lines that may hold it: a sweep adds hundreds
            if any(known == concept for known, _ in _parse("\n".join(l for l in text.splitlines() if needle in l))):
                return False
            # a line cut by a crash must not swallow the next entry
            handle.write(("\n" if text and not text.endswith("\n") else "")
                         + json.dumps({"concept": concept, "images": images}) + "\n")
            handle.flush()
        return True


def _parse(text: str) -> list[tuple[str, list[dict]]]:
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            concept, images = entry["concept"], entry["images"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if isinstance(concept, str) and isinstance(images, list):
            found.append((concept, images))
    return found
