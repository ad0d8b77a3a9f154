"""What the `line` commands share (chat included): the consoles, a progress bar, settings from flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

# Piped output (logs, CI) gets tables wide enough to read rather than rich's 80 columns.
# Untrusted text goes through agent.terminal.safe; emoji codes (":x:") stay text.
console = Console(emoji=False) if sys.stdout.isatty() else Console(width=140, emoji=False)
err_console = Console(stderr=True, emoji=False)


def settings_from_args(args: argparse.Namespace, **extra: Any):
    """The settings of a command: its config file, then `extra` and the flags given."""
    from agent.config import load_settings

    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    for key in ("model", "layer", "control", "cache_dir"):
        if getattr(args, key, None):
            overrides[key] = getattr(args, key)
    generator = getattr(args, "generator", None)
    if generator:
        kind, _, model = generator.partition(":")
        overrides["generator"] = {"kind": kind, **({"model": model} if model else {})}
    return load_settings(args.config, **overrides)


def progress(label: str):
    """A callback that shows long work (activations of a control set) on stderr, as a
    transient bar; None (nothing shown) where stderr is no terminal."""
    if not err_console.is_terminal:
        return None
    state = {"task": None}
    from rich.progress import Progress

    bar = Progress(console=err_console, transient=True)

    def update(what: str, done: int, total: int) -> None:
        if state["task"] is None:
            bar.start()
            state["task"] = bar.add_task(f"{label}: {what}", total=total)
        bar.update(state["task"], completed=done)
        if done >= total:
            bar.stop()
            state["task"] = None

    return update
