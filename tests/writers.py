"""What the tests' writer processes (multiprocessing, Ray tasks) run: light imports only."""

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_entries(root: str, worker: int) -> None:
    """Save the same 60 images and activation vectors as the other writers, and bank 20 concepts."""
    from tools.bank import FileBank
    from tools.cache import DiskCache

    cache = DiskCache(root)
    for i in range(60):
        cache.save_image(f"{i:064x}", Image.new("RGB", (32, 32), (i, 2 * i, 3 * i)))
        cache.save_array(f"{i:064x}", np.full(16, float(i)))
        FileBank(Path(root) / "banks" / "layer.jsonl").add(f"concept {i % 20}", [{"worker": worker}])


def add_concepts(url: str, bank_file: str, concepts: list[str], start: float) -> list[bool]:
    """Add every concept to the store's bank table and to a bank file, from `start` on;
    whether each add was the one that banked it."""
    from agent.runs.store import Store
    from tools.bank import FileBank

    table, file = Store(url, "").bank("layer"), FileBank(bank_file)
    time.sleep(max(0.0, start - time.time()))
    return [table.add(c, [{"pid": os.getpid()}]) for c in concepts] + [file.add(c, []) for c in concepts]
